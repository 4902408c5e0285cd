"""The atlas: ``convscope report`` builds one self-contained HTML page of the whole
network (model card, every layer and map, class visualisations, the 4-vs-9
comparison, mistakes explained, DeepDreams, provenance).

Stages run the engines and are stored in ``OUT/.stages`` so an interrupted build
resumes; :func:`build_atlas` is the entry point.
"""

from convscope.report.build import AtlasOptions, BuildResult, StageTiming, build_atlas
from convscope.report.profile import FULL, PROFILES, QUICK, Profile

__all__ = ["AtlasOptions", "BuildResult", "FULL", "PROFILES", "Profile", "QUICK", "StageTiming", "build_atlas"]
