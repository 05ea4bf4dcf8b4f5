"""Logic of the SlicerBrainBarriers module, free of Qt so it runs on slicer-core.

process      the pipeline's command line in a child process, progress from its JSON lines
scene_io     volumes to files and label maps back, through MRML storage nodes
segments     label map -> segmentation node; edited segments are never overwritten silently
logic        BrainBarriersLogic: start / finish / cancel, and a blocking segment()
dependencies what to install inside Slicer, and how, without touching Slicer's own packages
devices      device choices for the panel
models       the models the panel offers
panel        text and choices the widget shows (pure functions)
review       quality flags as segment status "flagged", the next flagged segment, the uncertainty volume
site_data    "Save case for training": inputs and reviewed segmentation into a site data folder
"""
