"""torch to ONNX, parity through the serving runner, model packages and index snapshots."""
