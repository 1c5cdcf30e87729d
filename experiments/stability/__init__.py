"""The stability-margin study (RQ6): how far each spike-clipping method stretches the stable learning rate."""
