"""galscale.spectra"""
