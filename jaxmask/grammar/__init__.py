"""A seeded English generator: the default LM's vocabulary, its training text and its evaluation items.

The lexicon is plain data in ``jaxmask/lexicon/`` (nouns with plurals, occupations, gendered nouns,
verbs with their 3rd-singular, base and past forms, adjectives, adverbs, prepositions, names).
Everything is deterministic given a seed (Python's ``random.Random`` seeded with a string).

Two languages share this code. "small" (the default LM's) uses only the hand-curated lists and draws
every word uniformly. "large" adds the lists of ``jaxmask/lexicon/large/`` (the most frequent English
nouns, verbs, adjectives and -ly adverbs from wordfreq, inflected by lemminflect, written once by
``jaxmask/build_lexicon.py``; more first names), about 6,000 word types in all, draws every open-class
word with its wordfreq frequency (Zipfian; floor 1 per million so that rare curated nouns still occur;
occupations in gendered coreference stay uniform), and adds constructions and filler sentences.

Modules: ``wordlists`` (the words, the vocabulary, the antecedents' gender statistics), ``phrases`` (the
seeded phrase generator), ``constructions`` (the training text's and the items' constructions, one table
of builders each), ``heldout`` (what items never share with training) and ``items`` (the evaluation items).
``python -m jaxmask.grammar`` prints the vocabulary's coverage of the vendored evaluation sets.
"""

from jaxmask.grammar.constructions import CONDITIONS, EXTRA_CONDITIONS, LAKRETZ_CONDITIONS, conditions_of, corpus
from jaxmask.grammar.heldout import contains_template_frame, noun_verb_pairs, reserved_pairs
from jaxmask.grammar.items import agreement_items, coverage, gender_items
from jaxmask.grammar.wordlists import (LANGUAGES, Lexicon, P, S, Verb, lexicon, occupation_pct_female, pct_female_of,
                                     vig_templates, vocabulary)
