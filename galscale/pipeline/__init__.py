"""galscale.pipeline"""
