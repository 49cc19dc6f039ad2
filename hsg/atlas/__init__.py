"""A static, offline HTML atlas of SAE features, generated from the graph (`build`)."""
