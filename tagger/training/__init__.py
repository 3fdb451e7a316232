"""Custom labels by transfer learning: ``tagger train`` (TensorFlow; the ``build`` extra)."""
