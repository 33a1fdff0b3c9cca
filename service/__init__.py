"""The torch-free online half: the feature contract, the store, the ONNX runner and the API."""
