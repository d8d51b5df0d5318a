"""radserve clinical outputs: evaluation, temperature calibration, operating thresholds, Grad-CAM.

Everything here runs on the client side, through the served model (the numbers come from the
deployment itself); it never imports the export package. Publishing a calibrated model is the
export side's job, composed by the command line (``radserve calibrate --publish``).
"""
