"""The weight-decay factorial (RQ7): what separates the paper's ACClip from Adam(W) on BERT, the clip or the decay?"""
