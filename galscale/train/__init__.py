"""galscale.train"""
