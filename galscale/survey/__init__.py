"""galscale.survey"""
