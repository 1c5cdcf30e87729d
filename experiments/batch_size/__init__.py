"""The batch-size study (RQ8): does the Adam-SGD gap on BERT come from the gradient noise?"""
