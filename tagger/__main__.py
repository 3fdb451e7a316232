"""``python -m tagger`` is the ``tagger`` command."""

from tagger.cli import main

main()
