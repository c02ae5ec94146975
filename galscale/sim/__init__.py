"""galscale.sim"""
