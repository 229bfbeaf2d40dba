"""Deployment: a converted model exported with Keras' own exporters (SavedModel, LiteRT, ONNX, OpenVINO)
and each artifact checked against torch in its own runtime (`vrconvert export`)."""
