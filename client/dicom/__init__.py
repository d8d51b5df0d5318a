"""DICOM domain: reading, decoding and display processing of projection radiographs."""
