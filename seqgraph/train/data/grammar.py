"""The generative grammar of English-like sentences behind the built-in ``grammar_text``
(and the tense tables of :mod:`seqgraph.train.tables`)."""

from __future__ import annotations

import random

from .dataset import Dataset
from .text import CharCorpus
from .validation import check_count


# The grammar of "grammar_text". Nouns and verbs carry their forms, so agreement is a rule
# the model has to learn: singular subjects take "sees", plural ones "see", past takes "saw".
_ANIMATE = [("cat", "cats"), ("dog", "dogs"), ("bird", "birds"), ("child", "children"),
            ("teacher", "teachers"), ("farmer", "farmers"), ("king", "kings"),
            ("queen", "queens"), ("mouse", "mice"), ("fox", "foxes"), ("wolf", "wolves"),
            ("horse", "horses"), ("baker", "bakers"), ("sailor", "sailors"),
            ("student", "students"), ("owl", "owls")]
_THINGS = [("apple", "apples"), ("book", "books"), ("box", "boxes"), ("letter", "letters"),
           ("song", "songs"), ("stone", "stones"), ("cake", "cakes"), ("boat", "boats"),
           ("key", "keys"), ("house", "houses"), ("lamp", "lamps"), ("egg", "eggs")]
_PLACES = ["river", "garden", "city", "forest", "market", "hill", "bridge", "school", "tower"]
_ADJECTIVES = ["small", "big", "old", "young", "happy", "quiet", "clever", "green", "red",
               "brave", "tired", "lazy", "gentle", "strange", "little", "angry", "early"]
_TRANSITIVE = [("sees", "see", "saw"), ("likes", "like", "liked"), ("finds", "find", "found"),
               ("carries", "carry", "carried"), ("watches", "watch", "watched"),
               ("follows", "follow", "followed"), ("helps", "help", "helped"),
               ("chases", "chase", "chased"), ("knows", "know", "knew"),
               ("wants", "want", "wanted"), ("brings", "bring", "brought"),
               ("loves", "love", "loved"), ("hides", "hide", "hid")]
_INTRANSITIVE = [("sleeps", "sleep", "slept"), ("runs", "run", "ran"), ("sings", "sing", "sang"),
                 ("waits", "wait", "waited"), ("laughs", "laugh", "laughed"),
                 ("dances", "dance", "danced"), ("swims", "swim", "swam"),
                 ("smiles", "smile", "smiled"), ("falls", "fall", "fell"),
                 ("listens", "listen", "listened")]
_NAMES = ["Anna", "Tom", "Maria", "Ben", "Lucy", "Sam", "Nora", "Leo"]
_SINGULAR_DETS = ["the", "the", "the", "a", "a", "this", "that", "every", "my", "our", "her"]
_PLURAL_DETS = ["the", "the", "the", "some", "many", "these", "those", "two", "three", "my",
                "our", "all the"]
_PREPOSITIONS = ["in", "near", "under", "behind", "beside", "across", "from", "to"]
_ADVERBS = ["quickly", "slowly", "quietly", "again", "today", "at night", "every day"]
_JOINERS = ["and", "but", "so"]
_SUBORDINATORS = ["when", "because", "if", "after", "while"]


class Grammar:
    """A small generative grammar of English-like sentences.

    Sentences are subject-verb(-object) clauses with determiners ("a" before a consonant,
    "an" before a vowel), adjectives, plurals that agree with the verb, past tense,
    negation with do/does/did, prepositional phrases, relative clauses ("the dogs that
    chase the cat sleep"), joined and subordinate clauses, questions, exclamations and
    quotations; paragraphs end in a newline.
    """

    def __init__(self, rnd: random.Random):
        self.rnd = rnd

    def pick(self, options):
        """One of ``options``, uniformly."""
        return options[self.rnd.randrange(len(options))]

    def chance(self, p: float) -> bool:
        """True with probability ``p``."""
        return self.rnd.random() < p

    def sentence(self) -> str:
        """One capitalised sentence with its closing punctuation."""
        roll = self.rnd.random()
        if roll < 0.10:
            text = self.question()
        elif roll < 0.20:
            text = f"{self.clause()}, {self.pick(_JOINERS)} {self.clause()}."
        elif roll < 0.30:
            text = f"{self.pick(_SUBORDINATORS)} {self.clause()}, {self.clause()}."
        elif roll < 0.34:
            text = f"{self.clause()}!"
        elif roll < 0.38:
            text = f'"{capital(self.clause())}," said {self.pick(_NAMES)}.'
        else:
            text = f"{self.clause()}."
        return capital(text)

    def question(self) -> str:
        """A yes/no question with do/does/did."""
        plural, tense = self.chance(0.35), self.tense()
        aux = "did" if tense == "past" else ("do" if plural else "does")
        verb = self.pick(_TRANSITIVE)
        return f"{aux} {self.noun_phrase(plural, True, 0)} {verb[1]} {self.object_phrase(1)}?"

    def tense(self) -> str:
        """``"past"`` (three times in ten) or ``"present"``."""
        return "past" if self.chance(0.3) else "present"

    def clause(self) -> str:
        """A subject and a predicate that agrees with it."""
        plural = self.chance(0.35)
        return f"{self.subject(plural)} {self.predicate(plural, self.tense(), 0)}"

    def subject(self, plural: bool) -> str:
        """A pronoun, a name (singular only) or a noun phrase."""
        roll = self.rnd.random()
        if roll < 0.10:
            return self.pick(["they", "we"]) if plural else self.pick(["he", "she"])
        if roll < 0.20 and not plural:
            return self.pick(_NAMES)
        return self.noun_phrase(plural, True, 0)

    def predicate(self, plural: bool, tense: str, depth: int) -> str:
        """A verb in ``tense`` agreeing with ``plural``, its object if it takes one, and
        perhaps a place and an adverb; ``depth`` bounds nested relative clauses."""
        transitive = self.chance(0.65)
        verb = self.pick(_TRANSITIVE if transitive else _INTRANSITIVE)
        if self.chance(0.08):
            aux = "did" if tense == "past" else ("do" if plural else "does")
            words = [aux, "not", verb[1]]
        else:
            words = [verb[2] if tense == "past" else verb[1] if plural else verb[0]]
        if transitive:
            words.append(self.object_phrase(depth + 1))
        if self.chance(0.25):
            words += [self.pick(_PREPOSITIONS), self.article(False, [self.pick(_PLACES)])]
        if self.chance(0.15):
            words.append(self.pick(_ADVERBS))
        return " ".join(words)

    def object_phrase(self, depth: int) -> str:
        """A noun phrase to stand as an object."""
        return self.noun_phrase(self.chance(0.35), self.chance(0.5), depth)

    def noun_phrase(self, plural: bool, animate: bool, depth: int) -> str:
        """A determiner, adjectives and a noun, perhaps followed by a relative clause."""
        words = self.rnd.sample(_ADJECTIVES, self.pick([0, 0, 1, 1, 2]))
        words.append(self.pick(_ANIMATE if animate else _THINGS)[1 if plural else 0])
        phrase = self.article(plural, words)
        if animate and depth < 2 and self.chance(0.12):
            phrase += " that " + self.predicate(plural, self.tense(), depth + 1)
        return phrase

    def article(self, plural: bool, words: list) -> str:
        """``words`` after a determiner (``a`` turned to ``an`` before a vowel)."""
        det = self.pick(_PLURAL_DETS if plural else _SINGULAR_DETS)
        if det == "a" and words[0][0] in "aeiou":
            det = "an"
        return " ".join([det] + words)


def capital(text: str) -> str:
    """``text`` with its first letter in upper case."""
    return text[:1].upper() + text[1:]


def grammar_text(n: int = 300_000, seed: int = 0) -> Dataset:
    """About ``n`` characters of English-like text from a small generative grammar.

    Whole sentences are generated until the text holds at least ``n`` characters. The
    grammar (see :class:`Grammar`) has real words, agreement, clauses and punctuation, so
    a character LSTM learns to spell and to agree, and its loss falls well below
    :func:`unigram_entropy`. The same seed gives the same text on every platform (Python's
    ``random.Random``, whose sequence is stable).
    """
    n = check_count("builtin dataset 'grammar_text'", "n (characters)", n, 1)
    grammar = Grammar(random.Random(seed))
    parts, size = [], 0
    while size < n:
        sentence = grammar.sentence() + ("\n" if grammar.chance(0.15) else " ")
        parts.append(sentence)
        size += len(sentence)
    data = CharCorpus("".join(parts), name="builtin:grammar_text").dataset()
    data.info.update(sizes={"n": n, "seed": seed})
    return data
