"""galscale: survey-scale classification of JWST galaxies on Ray.

Data flows one way: survey -> tiles -> sources -> cutouts -> model outputs -> catalog rows.
"""

__version__ = "0.1.0"
