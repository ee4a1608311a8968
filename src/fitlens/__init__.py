"""Fitlens: train, track, export and run the gym-exercise classifier."""

from fitlens import resolvers

resolvers.register()
