"""The paper's experiment (``simulate``: ``al-loop simulate``): active learning replayed on a
labelled data set, with an oracle as the expert."""
