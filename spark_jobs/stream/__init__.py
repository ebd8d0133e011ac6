"""The live stream: landing files -> bronze -> silver -> gold, once a second per region."""
