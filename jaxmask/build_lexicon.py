"""Writes the large lexicon's word lists (``jaxmask/lexicon/large/``) from wordfreq and lemminflect, once.

The generator reads the written lists and never imports these libraries, so they are build-time
dependencies only (``pip install -e .[lexicon]``)::

    python -m jaxmask.build_lexicon

Words are the most frequent English word types (wordfreq's ``top_n_list("en", 40000)``) by lemminflect
part of speech: a word that is both noun and verb is a verb when its past form is at least a tenth as
frequent as the word ("make"/"made"), else a noun ("time"/"timed"); an adjective must be only an
adjective, an adverb (ending in -ly) only an adverb. No form of a new
word may already be a form of the small (hand-curated) lexicon, so the large lexicon is a superset whose
noun forms and agreeing verb forms stay disjoint. Plurals and 3rd-person forms are lemminflect's.
``frequencies.tsv`` gives every lemma of both lexicons its wordfreq frequency (per million words), the
weights of the generator's Zipfian sampling.
"""

import os

import lemminflect
import wordfreq

from jaxmask import grammar

OUT = os.path.join(os.path.dirname(__file__), "lexicon", "large")
SIZES = {"nouns": 1000, "verbs": 300, "adjectives": 400, "adverbs": 100}
STOP = set("""a an the and or but if of to in on at by for with from as is are was were be been being am do does
did have has had not no yes this that these those there here what which who whom whose when where why how
i me my you your he him his she her it its we us our they them their all any some many much more most few
one two three four five six seven eight nine ten first second last next other another such own same so than
too very can will would shall should may might must could ok okay lol im dont cant wont gonna wanna yeah hey
mr mrs ms dr st etc vs something anything nothing everything someone anyone everyone
nobody somebody anybody everybody none whatever whoever myself yourself himself herself itself
ourselves yourselves themselves both each either neither whether million billion thousand hundred sir
january february march april may june july august september october november december monday tuesday
wednesday thursday friday saturday sunday""".split())
BLOCK = set("""fuck shit sex porn gay dick ass bitch damn hell sexy nude pussy cock penis vagina nigga nigger
fucking rape whore slut horny tit piss ought fame""".split())


def main() -> None:
  small = set(grammar.vocabulary())
  top = [w for w in wordfreq.top_n_list("en", 40000) if w.isalpha() and w.isascii() and len(w) >= 3
         and w not in STOP and w not in BLOCK]
  nouns, verbs, adjectives, adverbs = [], [], [], []
  taken = set(small)
  for w in top:
    lemmas = lemminflect.getAllLemmas(w)
    own = {pos for pos, ls in lemmas.items() if w in ls}
    if not own or w in taken:
      continue
    third, past = lemminflect.getInflection(w, "VBZ"), lemminflect.getInflection(w, "VBD")
    # a word that is both noun and verb counts as a verb when its past form is common relative to it
    verbal = "VERB" in own and past and wordfreq.word_frequency(past[0], "en") > 0.1 * wordfreq.word_frequency(w, "en")
    if verbal and len(verbs) < SIZES["verbs"]:
      if third:
        forms = (third[0], w, past[0])
        if not taken & set(forms) and third[0] != w:
          verbs.append(forms)
          taken.update(forms)
      continue
    if "NOUN" in own and own <= {"NOUN", "VERB"} and len(nouns) < SIZES["nouns"]:
      plural = lemminflect.getInflection(w, "NNS")
      # a plural that English uses (not "informations") that is not also a verb form
      if plural and plural[0] != w and plural[0].isalpha() and plural[0] not in taken \
          and "VERB" not in lemminflect.getAllLemmas(plural[0]) and not w.endswith("ing") \
          and wordfreq.word_frequency(plural[0], "en") > max(5e-7, 0.02 * wordfreq.word_frequency(w, "en")):
        nouns.append((w, plural[0]))
        taken.update((w, plural[0]))
    elif own == {"ADJ"} and not w.endswith(("ing", "ed")) and len(adjectives) < SIZES["adjectives"]:
      adjectives.append(w)
      taken.add(w)
    elif own == {"ADV"} and w.endswith("ly") and len(adverbs) < SIZES["adverbs"]:
      adverbs.append(w)
      taken.add(w)
  os.makedirs(OUT, exist_ok=True)
  header = "# written by jaxmask/build_lexicon.py (wordfreq + lemminflect); do not edit by hand\n"
  write = lambda name, rows, cols: open(os.path.join(OUT, name), "w", encoding="utf-8").write(
      header + f"# {cols}\n" + "".join("\t".join(r) + "\n" for r in rows))
  write("nouns.tsv", nouns, "singular\tplural   (inanimate and abstract common nouns)")
  write("verbs.tsv", [(t, b, p, "intrans,trans") for t, b, p in verbs], "third_singular\tbase\tpast\tframes")
  write("adjectives.txt", [(a,) for a in adjectives], "word")
  write("adverbs.txt", [(a,) for a in adverbs], "word")
  lex = grammar.lexicon()
  lemmas = ([sg for sg, _ in lex.all_nouns] + [v.base for v in lex.verbs] + list(lex.adjectives)
            + list(lex.adverbs) + [n for n, _ in lex.names] + [sg for sg, _ in nouns] + [b for _, b, _ in verbs]
            + adjectives + adverbs + [line.split("\t")[0] for line in open(os.path.join(OUT, "names.tsv"))
                                      if line.strip() and not line.startswith("#")])
  freq = {w: wordfreq.word_frequency(w, "en") * 1e6 for w in dict.fromkeys(lemmas)}
  write("frequencies.tsv", [(w, f"{max(f, 0.01):.4g}") for w, f in freq.items()], "lemma\tper_million")
  print(f"nouns {len(nouns)}, verbs {len(verbs)}, adjectives {len(adjectives)}, adverbs {len(adverbs)}, "
        f"frequencies {len(freq)}")


if __name__ == "__main__":
  main()
