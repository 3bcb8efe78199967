"""From pixels to scores: the model pipeline (:func:`create_model`) and the :class:`Scorer` on top of it."""
