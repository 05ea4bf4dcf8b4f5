"""SlicerBrainBarriers core: HMRNet segmentation of the anatomical brain barriers to cancer spread.

Importable and runnable without Slicer. Read top-down like the data flow:
structures -> io -> geometry -> preprocessing -> networks -> pipeline -> export; bundles beside
it; cli on top.
"""

__version__ = "0.1.0"
