"""Synthetic JWST/NIRCam data with known truth (GalSim profiles, real filter curves and spectra).

Entry points (import from the submodules; this package import stays light):

* `galscale.sim.survey.simulate_survey(SimConfig) -> SimulatedSurvey` and
  `write_simulated_survey(sim, out_dir)`: 7-band mosaics, error maps, TAN WCS, truth catalog.
* `galscale.sim.stamps.morphology_stamps(...)`, `redshift_stamps(...)`: training sets.
* `galscale.sim.contaminants.add_contaminants(...)`, `add_noise(...)`: image degradations.
* `galscale.sim.pictures.make_pictures(out_dir)`: the README pictures.

See docs/simulation.md for the model, the options and the truth columns.
"""
