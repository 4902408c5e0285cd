"""The atlas: ``convscope report`` builds the pages of the whole network (model card,
every layer and map, class visualisations, the most confused class pair, mistakes
explained, DeepDreams, provenance).

Typed stages (:mod:`convscope.report.stages`) are planned (:mod:`~convscope.report.plan`),
run by an executor (:mod:`~convscope.report.executor`) and stored in a
content-addressed cache (:mod:`~convscope.report.cache`) so an interrupted build
resumes; view models (:mod:`~convscope.report.views`) feed the HTML templates.
:func:`build_atlas` is the entry point.
"""

from convscope.report.build import AtlasOptions, BuildResult, StageTiming, build_atlas
from convscope.report.profile import FULL, PROFILES, QUICK, Profile

__all__ = ["AtlasOptions", "BuildResult", "FULL", "PROFILES", "Profile", "QUICK", "StageTiming", "build_atlas"]
