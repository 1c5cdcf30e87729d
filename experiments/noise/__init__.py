"""The gradient-noise study of BERT vs ResNet (the paper's RQ1): `python -m experiments.noise --out DIR`."""
