"""Photo bytes → upright RGB picture → the model's input tensor.

Uploads are hostile until proven otherwise: the byte, pixel and decoded-byte limits are checked
from the header before any pixel is decoded, only the formats people actually upload photos in
are parsed (fewer parsers exposed to untrusted bytes), and every way a decode can fail becomes
one of the typed, permanent errors in :mod:`tagger.errors` with a one-line reason, so a bad file
is recorded once and never retried.

One module per job; :mod:`~tagger.imaging.decoder` puts them together and imports the others,
never the reverse:

* :mod:`~tagger.imaging.sniffing`: what bytes Pillow could not open are, by their signature.
* :mod:`~tagger.imaging.opening`: parsing headers in the photo formats only, and turning every
  parser or decoder failure into a typed error.
* :mod:`~tagger.imaging.truncation`: refusing JPEG, PNG and WebP files whose data ends early.
* :mod:`~tagger.imaging.budget`: what a decode will hold, and the per-process decode budget.
* :mod:`~tagger.imaging.conversion`: the decoded picture as upright 8-bit RGB, band by band.
* :mod:`~tagger.imaging.decoder`: :class:`ImageDecoder` and the one-photo helpers.
* :mod:`~tagger.imaging.preprocess`: the picture as the model's input tensor.
"""

from tagger.imaging.budget import DecodeBudget
from tagger.imaging.decoder import DecodedImage, ImageDecoder, decode, load_tensor
from tagger.imaging.preprocess import preprocess

__all__ = ["DecodeBudget", "DecodedImage", "ImageDecoder", "decode", "load_tensor", "preprocess"]
