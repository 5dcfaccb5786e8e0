"""The demo (``run``: ``al-loop demo``), the local servers it starts and the tests use too
(``servers``: Label Studio and the ML backend as child processes), and the simulated expert
that answers Label Studio tasks from known boxes (``expert``)."""

# Label Studio's databases the demo can start it on (here, so `al-loop demo --help` needs no import).
DATABASES = ("sqlite", "postgresql")
