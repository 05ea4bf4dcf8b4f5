"""DICOM interoperability: SEG and RTSTRUCT exports of a result, and an auto-contouring storage node.

Needs the optional extra ``brainbarriers[dicom]`` (pydicom, highdicom, pynetdicom); nothing else in
the core imports this package, so basic use works without them.
"""
