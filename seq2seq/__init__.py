"""Machine translation: an RNN encoder with attention in front of the shared decoder."""

# the weight of a right-to-left model's log-probability when it reranks the n best (the recipe's and the command
# lines' default), chosen on the Ding validation split (README)
R2L_WEIGHT = 0.5
