"""Live evaluation: labelled tasks sent through the real student and teacher, recorded for the router's
analysis (:mod:`router.recorded`). This package holds the HTTP side, so that ``router/`` stays computation."""
