"""Model-extraction attacks: how faithful a clone gets for a given query budget."""
