"""The composition root: the `confidante` command and the one place that wires channels (bots/),
the core and the background workers (workers/) together. Nothing imports app/ but its entry
points; bots/ and workers/ import core/ only."""
