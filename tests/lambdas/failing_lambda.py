"""A Lambda that fails at import, as one with a typo in its model name does."""


def load_model(name):
    raise FileNotFoundError(f"no model named {name}")


load_model("deploy_ssd_missing")
