"""The stock vision handler builds one in ``initialize``; only its explanations API uses it."""


class IntegratedGradients:
    def __init__(self, model):
        self.model = model

    def attribute(self, *args, **kwargs):
        raise NotImplementedError("explanations are not part of this test")
