"""Conversion of pretrained resources: GloVe word vectors (glove.py, vectors.py)."""
