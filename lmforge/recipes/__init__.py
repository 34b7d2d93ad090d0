"""What every training recipe (pretrain, each fine-tuning task) shares: `scaffold.py`."""
