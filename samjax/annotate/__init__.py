"""``samjax annotate``: SAM's assisted-manual and semi-automatic data-engine
stages as a local web tool (docs/annotate.md).

The model stays in the server process (``session.AnnotationSession``); the
page (``static/``) sends prompts and brush strokes and gets masks back as
PNGs. Accepted objects are written as SA-1B-layout JSON with their
provenance (``records``), one file per image, atomically.
"""
