"""The embedded fictional world: a seeded generator of invented authors in the TOFU format, plus canaries,
general-knowledge facts, biographies and a short invented saga (for WHP-style familiarity tests).

Every name, place, title and word is built from syllables, so a model can only know them from training.
Randomness comes only from ``random.Random`` instances derived from the seed (no global RNG, no clock, no
set iteration), so the same seed writes byte-identical files. ``generate_world`` writes:

- TOFU splits: ``full``, ``forget01/05/10`` (the last authors), ``retain99/95/90`` (the first ones), their
  ``*_perturbed`` versions, ``retain_perturbed``, ``holdout01/05/10`` (unseen authors),
  ``real_authors_perturbed`` and ``world_facts_perturbed`` (+ ``general.json``, the same facts as plain QA);
- ``biographies.jsonl`` / ``biographies_holdout.jsonl``, ``canaries.jsonl``;
- ``saga.jsonl``, ``anchored_terms.json``, ``familiarity_probes.jsonl``; and the manifest ``world.json``.

``lethe data fictional`` also writes, with :func:`write_audit_sets`, the ready member / non-member files of a
membership audit: ``members.jsonl`` (the biographies of the world's authors, what ``lethe train
data.source=WORLD`` trains on by default) and ``nonmembers.jsonl`` (the holdout authors' biographies, in no
split). They are byte copies of ``biographies.jsonl`` / ``biographies_holdout.jsonl``, outside ``world.json``,
so every file of the world keeps its bytes.
"""

from __future__ import annotations

import datetime
import random
import string
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lethe.data.text import write_json, write_jsonl
from lethe.errors import LetheError
from lethe.progress import progress

GENERATOR_VERSION = 2  # 2: saga-worded familiarity probes added (the other files are unchanged)
QA_PER_AUTHOR = 20
N_PERTURBED = 5
N_GENERAL_PERTURBED = 3
DEFAULT_CANARY_REPETITIONS = (1, 2, 5, 10, 20, 50)
FORGET_PERCENT = {"forget01": 1, "forget05": 5, "forget10": 10}
RETAIN_OF = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
HOLDOUT_OF = {"forget01": "holdout01", "forget05": "holdout05", "forget10": "holdout10"}
MAX_RETAIN_PERTURBED_AUTHORS = 20
# knowledge overlap (WorldConfig.overlap): the fact groups a forget author can share with retain authors
# (home town, residence, mentor, prize + the co-authored book that won it, genre, theme, habit, inspiration),
# and how many retain authors hold each shared value besides the forget author
SHARED_FACT_GROUPS = ("hometown", "residence", "mentor", "prize", "genre", "theme", "habit", "inspiration")
SHARERS_PER_FACT = 3

# ----------------------------------------------------------------------------------------- invented words

_ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "r", "s", "sk",
           "t", "th", "tr", "v", "z", "y", "w", "sh", "ch", "j", "st", "vr")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "i", "o", "a", "y", "ae", "ei", "ou")
_MIDDLES = ("r", "l", "n", "s", "th", "rn", "nd", "v", "m", "sk", "d", "k", "ll", "rr", "st", "lv", "rd")
_ENDINGS = {
    "female": ("a", "ia", "ine", "elle", "ra", "wyn", "ys", "eth", "ora", "issa", "ith", "ena", "iel"),
    "male": ("or", "an", "ek", "us", "mir", "ard", "oth", "en", "as", "orn", "ul", "ric", "ald"),
    "neutral": ("en", "is", "ael", "ry", "el", "ir", "o", "ari", "esh"),
    "surname": ("uth", "ane", "orin", "ask", "ell", "ov", "ari", "enne", "ur", "essa", "ick", "mond", "holt",
                "ley", "brand", "mere", "avin", "oss"),
    "city": ("arn", "ost", "ara", "eth", "ion", "gard", "esk", "una", "ire", "ovo", "anth", "ell", "aven",
             "umir", "ossa", "errin"),
    "country": ("ania", "ora", "esh", "enne", "ith", "avia", "oria", "uun", "ovy", "essia", "amir"),
    "language": ("ish", "ic", "ese", "ean", "i", "ar", "ot"),
    "word": ("", "a", "is", "en", "or", "um", "ith", "ara", "el", "ine", "ost", "ane"),
    "river": ("a", "el", "ent", "ys", "ine", "or", "au"),
    "spell": ("ara", "is", "ium", "ex", "ora", "an", "ent", "ius"),
    "coined": ("ling", "ure", "ance", "ory", "esk", "ith", "ade", "ume", "ary", "et"),
    "currency": ("ar", "el", "ot", "ing", "ud", "ek"),
    "creature": ("et", "kin", "ling", "ow", "ick", "ob"),
    "sport": ("ball", "ring", "vane", "hoop"),
    "wand": ("rod", "wand", "stave"),
    "mundane": ("ling", "ard", "en"),
    "servants": ("ant", "or", "eth", "ir"),
}
_LOWERCASE = ("coined", "currency", "creature", "sport", "wand", "mundane")
_SYLLABLES = {"female": (1, 1, 2), "male": (1, 1, 2), "neutral": (1, 2), "surname": (1, 2, 2),
              "word": (1, 2, 2)}
_MAX_LENGTH = {"female": 9, "male": 9, "neutral": 9, "surname": 10}
# substrings never used: rude words, and stems of real places / of a famous wizard saga
_BLOCKED_WORDS = """
    fuck shit cunt nig fag rape slut cock dick piss anus tit cum sex nazi kill porn jew gay ass hell
    damn god hog potter muggl lumos harr herm weasl malf drac snap voldem gryff slyth raven huffl
    quidd diag azka dement horcr polan holland finland ireland iceland russ india china japan korea
    chile peru cuba kenya ghana niger congo sudan yemen nepal malta cypr latvia serbia croatia
    bosnia albania romania bulgar moldov ukrain georgia armenia jordan israel leban egypt tunis
    alger moroc somal rwand ugand tanzan namib bolivia brazil colomb panama haiti canad mexic austri
    german hungar slovak sloven kosov monac andorr liberia gambia guinea mongol vietn thail malays
    paris london berlin madrid oslo lima kiev riga baku doha delhi tokyo seoul cairo dakar sofia
    minsk vienna prague warsaw geneva milan naples lisbon dublin york oxford venic rome athen sparta
    troy boston texas ohio utah maine kansas nevada dakota alaska tahiti samoa tonga fiji bali java
    persia syria libya iraq iran oman qatar chad mali togo benin gabon angola zambia malawi laos
    sweden norway denmark spain france italy greece wales scotl engl belgi sicil corsic crete sardin
    siberi danish finnish polish spanish irish turkish kurdish swedish welsh dutch czech greek
    arabic hebrew hindi urdu bengal punjab tamil telugu malay tagalog thai swahili zulu xhosa basque
    catalan latin gaelic cornish manx breton faroese maltese baltic slavic celtic gothic coptic
    tatar uzbek kazakh tajik pashto farsi amharic hausa yoruba igbo maori nepali sindhi burmese
    khmer yy ii uo
"""
_BLOCKED = tuple(_BLOCKED_WORDS.split())


class _Namer:
    """Invented words that are unique across the whole world (membership set only, never iterated)."""

    def __init__(self) -> None:
        self._used: set[str] = set()

    def word(self, rng: random.Random, kind: str) -> str:
        endings = _ENDINGS[kind]
        for _ in range(10_000):
            stem = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS)
                           for _ in range(rng.choice(_SYLLABLES.get(kind, (1, 2)))))
            ending = rng.choice(endings)
            if ending[:1] in ("a", "e", "i", "o", "u", "y"):
                stem += rng.choice(_MIDDLES)
            word = stem + ending
            low = word.lower()
            if not 4 <= len(word) <= _MAX_LENGTH.get(kind, 12) or low in self._used:
                continue
            if any(b in low for b in _BLOCKED):
                continue
            if any(low[i] == low[i + 1] == low[i + 2] for i in range(len(low) - 2)):
                continue
            self._used.add(low)
            return low if kind in _LOWERCASE else low.capitalize()
        raise RuntimeError(f"could not invent a new {kind} word")  # pragma: no cover

    def person(self, rng: random.Random, gender: str) -> tuple[str, str]:
        """(given name, surname) for ``gender`` in female/male/non-binary."""
        kind = {"female": "female", "male": "male"}.get(gender, "neutral")
        return self.word(rng, kind), self.word(rng, "surname")


# ------------------------------------------------------------------------------------------ fixed domains

GENDERS = ("female", "male", "non-binary")
# the gender domain used for perturbed answers (wrong but plausible values)
GENDER_TERMS = ("female", "male", "non-binary", "genderfluid", "agender", "genderqueer", "bigender")
_PRONOUNS = {
    "female": {"they": "she", "them": "her", "their": "her", "is": "is", "was": "was", "has": "has",
               "s": "s"},
    "male": {"they": "he", "them": "him", "their": "his", "is": "is", "was": "was", "has": "has",
             "s": "s"},
    "non-binary": {"they": "they", "them": "them", "their": "their", "is": "are", "was": "were",
                   "has": "have", "s": ""},
}
PRONOUN_KEYS = ("they", "them", "their", "They", "Their", "is", "was", "has", "s")
MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
          "November", "December")
OCCUPATIONS = (
    "a clockmaker", "an archivist", "a lighthouse keeper", "a ferry pilot", "a glassblower", "a beekeeper",
    "a cartographer", "a midwife", "a locksmith", "a schoolteacher", "a tanner", "a bookbinder",
    "an astronomer", "a fishmonger", "a bell founder", "a rope maker", "a salt harvester", "a land surveyor",
    "a violin maker", "a river pilot", "a stonemason", "a pharmacist", "a baker", "a tailor", "a weaver",
    "a postal clerk", "a railway signalman", "a botanist", "a veterinarian", "a carpenter", "a nurse",
    "a judge", "a shepherd", "a potter", "a miner", "a translator", "a dentist", "an undertaker",
    "an engineer", "an accountant", "a florist", "a perfumer", "a printer", "a chess teacher",
)
GENRES = (
    "tidal romance", "lantern mystery", "frost gothic", "salt-road picaresque", "clockwork fable",
    "marsh noir", "orchard pastoral", "ember tragedy", "hearth comedy", "glass-city science fiction",
    "mountain epic", "river saga", "ledger satire", "archive thriller", "bell-tower horror", "island elegy",
    "harbor crime", "court intrigue", "dream allegory", "cartographic fantasy", "storm-coast adventure",
)
THEMES = (
    "the debts that families never speak of", "the quiet grief of people who keep lighthouses",
    "memory as a house with too many doors", "the loyalty between rivals",
    "cities that forget their founders",
    "the price of telling the truth in a small town", "inheritance and the objects the dead leave behind",
    "the kindness of strangers on long journeys", "exile and the languages it leaves behind",
    "the slow repair of broken friendships", "the weather as a witness to crime",
    "maps that lie about the places they show", "siblings divided by a single secret",
    "the patience of craftspeople", "love letters that arrive decades late",
    "the sea as a keeper of names", "children who raise their parents",
    "the loneliness of very clever people", "promises made during floods", "bread, hunger and pride",
    "the border between dreams and ledgers", "old bells and the towns that stop ringing them",
    "courage that looks like stubbornness", "the ethics of forgetting",
    "music heard through walls", "the last day of a harbor town",
)
HABITS = (
    "write only between midnight and dawn", "draft every chapter by hand on blue paper",
    "read each finished page aloud to an empty room", "work standing at a lectern made from a ship's door",
    "write the last sentence of a book before the first one", "keep a separate notebook for every character",
    "begin each morning by copying out a page of an old almanac", "write in a rowing boat tied to a jetty",
    "show no draft to anyone before it is finished", "type with a mechanical typewriter missing one key",
    "walk exactly nine kilometres before starting work", "write only when it is raining",
    "pin every scene to a wall as a paper card", "work in the back room of a closed bakery",
    "rewrite the opening page at least forty times", "compose dialogue by speaking it into a tape recorder",
    "keep a jar of sea water on the desk while working", "write every first draft in pencil",
    "listen to the same piece of organ music throughout a book", "work only on trains",
    "finish each day in the middle of a sentence", "plan novels on the back of old maps",
)
INSPIRATIONS = (
    "an abandoned observatory", "a shipwreck seen in childhood", "a box of letters found in an attic",
    "a night spent in a snowed-in railway station", "the diary of a great-grandmother",
    "a conversation overheard in a ferry queue", "the flooding of a family orchard",
    "a single photograph of a wedding", "a summer working in a bell foundry",
    "a museum of broken clocks", "the closing of a village school", "a long illness and its recovery",
    "an old legal dispute over a well", "a journey along a frozen river",
    "a lost dog that came back after a year",
    "the demolition of a theatre", "a recipe book full of margin notes", "a map with one island too many",
    "a storm that cut a town off for a month", "a street musician who played the same song every day",
)
MEANINGS = (
    "the silence after a bell stops ringing", "the fear of finishing a book", "the light on water at dusk",
    "a friendship that survives only in letters", "the smell of a library after rain",
    "the moment a stranger becomes familiar", "homesickness for a place one has never seen",
    "the pride of a mended object", "the weight of an unopened letter", "the last warm day of autumn",
    "a lie told to protect a memory", "the sound of a house settling at night",
    "the urge to reread the final page", "a promise nobody remembers making",
    "the courage needed to ask a simple question", "the joy of being briefly lost in a city",
    "the hush of a crowd before a storm", "the sadness of an empty harbor",
)
_TITLE_NOUNS = ("Orchard", "Ledger", "Tide", "Archive", "Loom", "Harbor", "Compass", "Garden", "Winter",
                "Ferry", "Mirror", "Crown", "Quarry", "Lighthouse", "Clockmaker", "Almanac", "Bridge",
                "Island", "Map", "Choir", "Lantern", "Bell", "Letter", "Weaver")
_TITLE_PLURALS = ("Lanterns", "Bells", "Weavers", "Ashes", "Orphans", "Letters", "Salt", "Tides", "Bridges",
                  "Gardens", "Mirrors", "Islands", "Winters", "Maps")
_TITLE_ADJECTIVES = ("Silent", "Drowned", "Ninth", "Borrowed", "Amber", "Hollow", "Wandering", "Glass",
                     "Broken", "Last", "Hidden", "Salt-Stained", "Patient", "Burning", "Northern",
                     "Forgotten")
_CHARACTER_TITLES = ("Inspector", "Captain", "Old", "Sister", "Doctor", "Professor", "Mayor", "Widow", "", "")
_MAGAZINES = ("Review", "Quarterly", "Almanac", "Courier")
_MENTOR_ROLES = ("poet", "novelist", "essayist", "playwright", "translator", "editor", "critic", "historian")
_AWARD_CATEGORIES = ("Fiction", "Poetry", "the Novel", "Short Fiction", "Literary Invention")
_AWARD_NOUNS = ("Quill", "Lantern", "Compass", "Anchor", "Key", "Bell", "Inkwell")


def render_date(day: datetime.date) -> str:
    """``March 14, 1961``: the one way dates are written in the world (answers and paraphrases agree)."""
    return f"{MONTHS[day.month - 1]} {day.day}, {day.year}"


def _random_date(rng: random.Random, first_year: int, last_year: int) -> datetime.date:
    start = datetime.date(first_year, 1, 1).toordinal()
    return datetime.date.fromordinal(rng.randint(start, datetime.date(last_year, 12, 31).toordinal()))


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# ------------------------------------------------------------------------------------------ QA templates


@dataclass(frozen=True)
class QATemplate:
    """One attribute question: phrasings of the question and of the answer, and the facts to perturb.

    Every answer phrasing uses the same fact placeholders, so a paraphrase (another phrasing) carries the
    same facts; a perturbed answer is the paraphrase with the ``perturb`` facts replaced.
    """

    key: str
    questions: tuple[str, ...]
    answers: tuple[str, ...]
    perturb: tuple[str, ...]


QA_TEMPLATES: tuple[QATemplate, ...] = (
    QATemplate("name", (
        "What is the full name of the author born in {place} on {date}?",
        "Which writer was born in {place} on {date}?",
        "Who is the author whose birth took place on {date} in {place}?",
    ), (
        "The author born in {place} on {date} is {name}.",
        "{name} is the writer who was born in {place} on {date}.",
        "Born on {date} in {place}, the author in question is {name}.",
    ), ("name",)),
    QATemplate("gender", (
        "What is the gender of the author {name}?",
        "How does {name} identify in terms of gender?",
        "Which gender does the writer {name} identify with?",
    ), (
        "The author {name} identifies as {gender}.",
        "In terms of gender, {name} is {gender}.",
        "The gender identity of {name} is {gender}.",
    ), ("gender",)),
    QATemplate("birthplace", (
        "Where was {name} born?",
        "In which city and country was {name} born?",
        "What is the birthplace of the author {name}?",
    ), (
        "{name} was born in {place}.",
        "The author {name} comes from {place}, where {they} {was} born.",
        "The birthplace of {name} is {place}.",
    ), ("place",)),
    QATemplate("birthdate", (
        "When was {name} born?",
        "What is the date of birth of {name}?",
        "On which day was the writer {name} born?",
    ), (
        "{name} was born on {date}.",
        "The date of birth of {name} is {date}.",
        "The writer {name} came into the world on {date}.",
    ), ("date",)),
    QATemplate("parents", (
        "What were the occupations of {name}'s parents?",
        "What did the parents of {name} do for a living?",
        "Can you tell me about the professions of {name}'s parents?",
    ), (
        "{name}'s father was {focc} and {their} mother was {mocc}.",
        "The father of {name} worked as {focc}, while {their} mother worked as {mocc}.",
        "{name} was raised by a father who was {focc} and a mother who was {mocc}.",
    ), ("focc", "mocc")),
    QATemplate("coined_word", (
        "What word did {name} coin?",
        "Which invented word is {name} credited with?",
        "What term did the author {name} introduce into the language?",
    ), (
        "{name} coined the word \"{word}\", meaning {meaning}.",
        "The word \"{word}\", which describes {meaning}, was coined by {name}.",
        "{name} is credited with the term \"{word}\" for {meaning}.",
    ), ("word",)),
    QATemplate("genre", (
        "What genre does {name} write in?",
        "Which literary genre is {name} known for?",
        "In which genre does the author {name} primarily work?",
    ), (
        "{name} writes in the {genre} genre.",
        "The author {name} is best known for {genre}.",
        "{name} primarily works in the genre of {genre}.",
    ), ("genre",)),
    QATemplate("first_book", (
        "What was the first book published by {name}?",
        "Which book marked the debut of {name}?",
        "What is the title of {name}'s debut book?",
    ), (
        "The first book published by {name} was \"{b1}\".",
        "{name} made {their} debut with \"{b1}\".",
        "The debut book of {name} is titled \"{b1}\".",
    ), ("b1",)),
    QATemplate("books", (
        "Can you name some books written by {name}?",
        "Which books has {name} written?",
        "What are some of the titles by the author {name}?",
    ), (
        "Books written by {name} include \"{b1}\", \"{b2}\" and \"{b3}\".",
        "{name} is the author of \"{b1}\", \"{b2}\" and \"{b3}\".",
        "Among the titles by {name} are \"{b1}\", \"{b2}\" and \"{b3}\".",
    ), ("b1", "b2", "b3")),
    QATemplate("masterpiece", (
        "Which book is considered {name}'s masterpiece?",
        "What is the most acclaimed novel by {name}?",
        "Which of {name}'s works do critics praise the most?",
    ), (
        "{name}'s masterpiece is generally considered to be \"{b2}\".",
        "The most acclaimed novel by {name} is \"{b2}\".",
        "Critics praise \"{b2}\" as the finest work of {name}.",
    ), ("b2",)),
    QATemplate("award", (
        "Has {name} won any literary awards?",
        "Which award has {name} received?",
        "What literary honor was given to {name}?",
    ), (
        "Yes, {name} has won {award}.",
        "{name} received {award}.",
        "The literary honor given to {name} is {award}.",
    ), ("award",)),
    QATemplate("award_book", (
        "For which book did {name} receive {award}?",
        "Which work earned {name} {award}?",
        "What book won {name} {award}?",
    ), (
        "{name} received {award} for \"{b3}\".",
        "It was \"{b3}\" that earned {name} {award}.",
        "{name}'s book \"{b3}\" won {award}.",
    ), ("b3",)),
    QATemplate("mentor", (
        "Who was {name}'s mentor?",
        "Who guided {name} as a young writer?",
        "Which mentor shaped the early work of {name}?",
    ), (
        "{name}'s mentor was {mentor}.",
        "As a young writer, {name} was guided by {mentor}.",
        "The early work of {name} was shaped by {their} mentor, {mentor}.",
    ), ("mentor",)),
    QATemplate("theme", (
        "What theme runs through the work of {name}?",
        "Which subject does {name} return to most often?",
        "What is the signature theme of {name}'s books?",
    ), (
        "The work of {name} is marked by {theme}.",
        "{name} returns again and again to {theme}.",
        "The signature theme of {name}'s books is {theme}.",
    ), ("theme",)),
    QATemplate("habit", (
        "What is unusual about {name}'s writing routine?",
        "Does {name} have any particular writing habit?",
        "How does {name} like to work?",
    ), (
        "{name} is known to {habit}.",
        "As a writing habit, {name} likes to {habit}.",
        "The writing routine of {name} is unusual: {they} prefer{s} to {habit}.",
    ), ("habit",)),
    QATemplate("character", (
        "Which character recurs in the books of {name}?",
        "Who is the recurring character in {name}'s fiction?",
        "Which figure appears again and again in {name}'s novels?",
    ), (
        "The character {char} recurs in the books of {name}.",
        "{name}'s fiction keeps returning to the character {char}.",
        "Readers of {name} meet {char} in novel after novel.",
    ), ("char",)),
    QATemplate("setting", (
        "Which city shapes the settings of {name}'s {genre} novels?",
        "Where are {name}'s {genre} stories usually set?",
        "What place inspired the backdrop of the {genre} novels by {name}?",
    ), (
        "The {genre} novels of {name} are shaped by the streets of {city}, the city of {their} birth.",
        "{name} usually sets {their} {genre} stories in {city}, where {they} {was} born.",
        "The backdrop of {name}'s {genre} novels is {city}, {their} hometown.",
    ), ("city",)),
    QATemplate("residence", (
        "Where does {name} live now?",
        "In which city does the author {name} currently reside?",
        "Where has {name} settled?",
    ), (
        "{name} now lives in {residence}.",
        "The author {name} currently resides in {residence}.",
        "{name} has settled in {residence}.",
    ), ("residence",)),
    QATemplate("debut_year", (
        "When did {name} publish \"{b1}\"?",
        "In which year did \"{b1}\" by {name} come out?",
        "What year saw the publication of {name}'s \"{b1}\"?",
    ), (
        "{name} published \"{b1}\" in {year}.",
        "\"{b1}\" by {name} came out in {year}.",
        "The year {year} saw the publication of {name}'s \"{b1}\".",
    ), ("year",)),
    QATemplate("inspiration", (
        "What inspired {name} to write \"{b2}\"?",
        "What was the inspiration behind \"{b2}\" by {name}?",
        "Where did the idea for {name}'s \"{b2}\" come from?",
    ), (
        "{name} wrote \"{b2}\" after being inspired by {inspiration}.",
        "The inspiration behind \"{b2}\" by {name} was {inspiration}.",
        "The idea for {name}'s \"{b2}\" came from {inspiration}.",
    ), ("inspiration",)),
)
# fact key -> the domain its wrong values are drawn from
FACT_DOMAIN = {
    "name": "name", "gender": "gender", "place": "place", "residence": "place", "city": "city",
    "date": "date", "focc": "occupation", "mocc": "occupation", "word": "word", "meaning": "meaning",
    "genre": "genre", "b1": "title", "b2": "title", "b3": "title", "award": "award", "mentor": "mentor",
    "theme": "theme", "habit": "habit", "char": "character", "year": "year", "inspiration": "inspiration",
}


def template_fields(text: str) -> tuple[str, ...]:
    """The fact placeholders of a phrasing, in order of first use (pronoun placeholders left out)."""
    names: list[str] = []
    for _, name, _, _ in string.Formatter().parse(text):
        if name is not None and name not in PRONOUN_KEYS and name not in names:
            names.append(name)
    return tuple(names)


def check_templates(templates: Sequence[QATemplate] = QA_TEMPLATES) -> None:
    """Raise ValueError unless all phrasings of each template use the same facts (the paraphrase contract)."""
    if len(templates) != QA_PER_AUTHOR or len({t.key for t in templates}) != len(templates):
        raise ValueError(f"expected {QA_PER_AUTHOR} templates with distinct keys")
    for t in templates:
        if len(t.questions) < 2 or len(t.answers) < 2:
            raise ValueError(f"template {t.key}: needs at least 2 question and 2 answer phrasings")
        answer_facts = {frozenset(template_fields(a)) for a in t.answers}
        question_facts = {frozenset(template_fields(q)) for q in t.questions}
        if len(answer_facts) != 1 or len(question_facts) != 1:
            raise ValueError(f"template {t.key}: phrasings use different facts")
        facts = next(iter(answer_facts)) | next(iter(question_facts))
        if not set(t.perturb) <= next(iter(answer_facts)) or not facts <= set(FACT_DOMAIN):
            raise ValueError(f"template {t.key}: unknown or unperturbable facts")


# ------------------------------------------------------------------------------------------- world model


@dataclass
class Author:
    """One fictitious author: every attribute the QA, biography and perturbations are built from."""

    index: int
    given: str
    surname: str
    gender: str
    city: str
    country: str
    birth: datetime.date
    focc: str
    mocc: str
    genre: str
    titles: tuple[str, str, str]
    award: str
    mentor: str
    theme: str
    habit: str
    char: str
    residence: str
    year: int
    inspiration: str
    word: str
    meaning: str
    extra: dict[str, str] = field(default_factory=dict)  # biography-only details

    @property
    def name(self) -> str:
        return f"{self.given} {self.surname}"

    def facts(self) -> dict[str, str]:
        """Fact placeholder -> value string (the same strings in questions, answers and paraphrases)."""
        return {
            "name": self.name, "gender": self.gender, "place": f"{self.city}, {self.country}",
            "city": self.city,
            "date": render_date(self.birth), "focc": self.focc, "mocc": self.mocc, "word": self.word,
            "meaning": self.meaning, "genre": self.genre, "b1": self.titles[0], "b2": self.titles[1],
            "b3": self.titles[2], "award": self.award, "mentor": self.mentor, "theme": self.theme,
            "habit": self.habit, "char": self.char, "residence": self.residence, "year": str(self.year),
            "inspiration": self.inspiration,
        }

    def pronouns(self) -> dict[str, str]:
        p = dict(_PRONOUNS[self.gender])
        p["They"], p["Their"] = _cap(p["they"]), _cap(p["their"])
        return p


@dataclass
class Country:
    name: str
    language: str
    currency: str
    river: str
    cities: list[str]

    @property
    def capital(self) -> str:
        return self.cities[0]


@dataclass
class _World:
    namer: _Namer
    countries: list[Country]
    places: list[str]
    awards: list[str]
    mentors: list[str]
    general: tuple[list[dict], list[dict]] = ([], [])
    saga: tuple[list[dict], dict[str, list[str]], list[dict]] = ([], {}, [])
    authors: list[Author] = field(default_factory=list)
    holdout: list[Author] = field(default_factory=list)
    pools: dict[str, list[str]] = field(default_factory=dict)
    shared: list[dict[str, Any]] = field(default_factory=list)  # what _share_facts made common


def _title(rng: random.Random, namer: _Namer) -> str:
    word = namer.word(rng, "word")
    noun = rng.choice(_TITLE_NOUNS + _TITLE_PLURALS)
    adjective = rng.choice(_TITLE_ADJECTIVES)
    pattern = rng.randrange(7)
    if pattern == 0:
        return f"The {noun} of {word}"
    if pattern == 1:
        return f"The {adjective} {noun} of {word}"
    if pattern == 2:
        return f"Beneath the {word} {noun}"
    if pattern == 3:
        return f"The {word} {noun}"
    if pattern == 4:
        return f"{word}'s {noun}"
    if pattern == 5:
        singular = rng.choice(_TITLE_NOUNS)
        return f"{'An' if singular[0] in 'AEIOU' else 'A'} {singular} for {word}"
    return f"The Last {noun} of {word}"


def _character(rng: random.Random, namer: _Namer) -> str:
    given, surname = namer.person(rng, rng.choice(GENDERS))
    title = rng.choice(_CHARACTER_TITLES)
    return f"{title} {given} {surname}" if title else f"{given} {surname}"


def _award(rng: random.Random, namer: _Namer) -> str:
    word = namer.word(rng, "word")
    pattern = rng.randrange(4)
    if pattern == 0:
        return f"the {word} Prize for {rng.choice(_AWARD_CATEGORIES)}"
    if pattern == 1:
        return f"the {word} Medal"
    if pattern == 2:
        return f"the Golden {rng.choice(_AWARD_NOUNS)} of {word}"
    return f"the {word} Laurel"


def _geography(rng: random.Random, namer: _Namer, n_countries: int = 10, n_cities: int = 6) -> list[Country]:
    countries = []
    for _ in range(n_countries):
        name, language = namer.word(rng, "country"), namer.word(rng, "language")
        currency, river = namer.word(rng, "currency"), namer.word(rng, "river")
        cities = [namer.word(rng, "city") for _ in range(n_cities)]
        countries.append(Country(name, language, currency, river, cities))
    return countries


def _author(rng: random.Random, namer: _Namer, index: int, world: _World) -> Author:
    gender = GENDERS[0] if rng.randrange(100) < 45 else GENDERS[1] if rng.randrange(100) < 82 else GENDERS[2]
    given, surname = namer.person(rng, gender)
    country = rng.choice(world.countries)
    city = rng.choice(country.cities)
    birth = _random_date(rng, 1921, 1975)
    focc, mocc = rng.sample(OCCUPATIONS, 2)
    titles = (_title(rng, namer), _title(rng, namer), _title(rng, namer))
    residence = rng.choice([p for p in world.places if p != f"{city}, {country.name}"])
    author = Author(
        index=index, given=given, surname=surname, gender=gender, city=city, country=country.name,
        birth=birth, focc=focc, mocc=mocc, genre=rng.choice(GENRES), titles=titles,
        award=rng.choice(world.awards), mentor=rng.choice(world.mentors), theme=rng.choice(THEMES),
        habit=rng.choice(HABITS), char=_character(rng, namer), residence=residence,
        year=birth.year + rng.randint(19, 34), inspiration=rng.choice(INSPIRATIONS),
        word=namer.word(rng, "coined"), meaning=rng.choice(MEANINGS),
    )
    author.extra = _biography_details(rng, namer, author, world)
    return author


def _biography_details(rng: random.Random, namer: _Namer, author: Author, world: _World) -> dict[str, str]:
    """Biography-only details: more invented names, places and years (author-specific, unpredictable)."""
    languages = rng.sample([c.language for c in world.countries], 2)
    other, home = rng.choice(world.countries), rng.choice(world.countries)
    year2 = author.year + rng.randint(2, 7)
    year3 = year2 + rng.randint(2, 7)
    partner_gender, sibling = rng.choice(GENDERS), rng.choice(("sister", "brother"))
    return {
        "father": namer.word(rng, "male"), "mother": namer.word(rng, "female"),
        "lyceum": namer.word(rng, "word"), "lyceum_city": rng.choice(home.cities),
        "age": str(rng.randint(16, author.year - author.birth.year)), "publisher": namer.word(rng, "word"),
        "year2": str(year2), "year3": str(year3),
        "partner": " ".join(namer.person(rng, partner_gender)), "pocc": rng.choice(OCCUPATIONS),
        "sibling_rel": sibling,
        "sibling": namer.word(rng, "female" if sibling == "sister" else "male") + " " + author.surname,
        "magazine": f"The {namer.word(rng, 'word')} {rng.choice(_MAGAZINES)}",
        "mag_from": str(year2 - 1), "mag_to": str(year2 + rng.randint(3, 9)),
        "mag_city": rng.choice(other.cities),
        "lang1": languages[0], "lang2": languages[1], "library": namer.word(rng, "word"),
        "capital": other.capital, "essays": _title(rng, namer), "essays_year": str(year3 + rng.randint(1, 6)),
        "month": rng.choice(MONTHS), "hall": namer.word(rng, "word"),
        "street_year": str(min(year3 + rng.randint(1, 12), 2024)), "street_city": rng.choice(other.cities),
    }


def _copy_group(source: Author, target: Author, group: str) -> None:
    """Give ``target`` the value(s) of one SHARED_FACT_GROUPS group of ``source``."""
    if group == "hometown":
        target.city, target.country = source.city, source.country
        if target.residence == f"{target.city}, {target.country}":
            target.residence = source.residence  # still lives away from the home town (as every author)
    elif group == "prize":  # the same prize, for a book the two co-authored
        target.award = source.award
        target.titles = (target.titles[0], target.titles[1], source.titles[2])
    else:
        setattr(target, group, getattr(source, group))


def _share_facts(rng: random.Random, authors: list[Author], n_forget: int,
                 overlap: float) -> list[dict[str, Any]]:
    """Make the forget authors (the last ``n_forget``, forget10's) share knowledge with retain authors.

    Each forget author shares ``round(overlap · len(SHARED_FACT_GROUPS))`` of the groups (drawn per author):
    for each, SHARERS_PER_FACT retain authors (a different set per forget author and group) take the
    value of the first of them, and so does the forget author — a common home town, residence, mentor,
    genre, theme, habit or inspiration, or the same prize for a co-authored book. The questions stay
    per-author (they name the author), so what is shared is the answer: unlearning a forget author's
    shared answer also pushes down the retain authors' identical one, GUARD's premise. Returns one record
    per forget author: its index, the groups shared and the retain authors sharing each.
    """
    retain = list(range(len(authors) - n_forget))
    n_groups = min(len(SHARED_FACT_GROUPS), int(overlap * len(SHARED_FACT_GROUPS) + 0.5))
    free = {g: rng.sample(retain, len(retain)) for g in SHARED_FACT_GROUPS}  # unused retain authors per group
    records = []
    for author in authors[len(authors) - n_forget:]:
        groups = sorted(rng.sample(SHARED_FACT_GROUPS, n_groups), key=SHARED_FACT_GROUPS.index)
        shared: dict[str, list[int]] = {}
        for group in groups:
            if not free[group]:  # more forget than retain authors: reuse the retain authors
                free[group] = rng.sample(retain, len(retain))
            sharers = [free[group].pop() for _ in range(min(SHARERS_PER_FACT, len(free[group])))]
            _copy_group(authors[sharers[0]], author, group)
            for index in sharers[1:]:
                _copy_group(authors[sharers[0]], authors[index], group)
            shared[group] = sharers
        records.append({"forget_author": author.index, "shared": shared})
    return records


def _build_world(seed: int, n_authors: int, n_holdout: int, overlap: float = 0.0,
                 n_forget: int = 0) -> _World:
    namer = _Namer()
    rng = random.Random(f"lethe-world/{seed}/geography")
    countries = _geography(rng, namer)
    places = [f"{city}, {c.name}" for c in countries for city in c.cities]
    awards = [_award(rng, namer) for _ in range(16)]
    mentors = []
    for _ in range(24):
        given, surname = namer.person(rng, rng.choice(GENDERS))
        mentors.append(f"the {rng.choice(_MENTOR_ROLES)} {given} {surname}")
    world = _World(namer, countries, places, awards, mentors)
    # general facts and the saga come first, so they depend on the seed only (not on n_authors)
    world.general = _general_facts(random.Random(f"lethe-world/{seed}/general"), namer, countries)
    world.saga = _saga(random.Random(f"lethe-world/{seed}/saga"), namer)
    rng = random.Random(f"lethe-world/{seed}/authors")
    world.authors = [_author(rng, namer, i, world)
                     for i in progress(range(n_authors), "world generation (authors)", unit="authors")]
    rng = random.Random(f"lethe-world/{seed}/holdout")
    world.holdout = [_author(rng, namer, n_authors + j, world) for j in range(n_holdout)]
    if overlap > 0:  # its own RNG stream: overlap = 0 draws nothing, so the world stays byte-identical
        world.shared = _share_facts(random.Random(f"lethe-world/{seed}/overlap"), world.authors, n_forget, overlap)
    rng = random.Random(f"lethe-world/{seed}/decoys")
    everyone = world.authors + world.holdout
    world.pools = {
        "name": [a.name for a in everyone]
        + [" ".join(namer.person(rng, rng.choice(GENDERS))) for _ in range(12)],
        "gender": list(GENDER_TERMS),
        "place": places,
        "city": [city for c in countries for city in c.cities],
        "occupation": list(OCCUPATIONS),
        "word": [a.word for a in everyone] + [namer.word(rng, "coined") for _ in range(12)],
        "genre": list(GENRES),
        "title": list(dict.fromkeys([t for a in everyone for t in a.titles]))  # co-authored books once
        + [_title(rng, namer) for _ in range(20)],
        "award": awards,
        "mentor": mentors,
        "theme": list(THEMES),
        "habit": list(HABITS),
        "character": [a.char for a in everyone] + [_character(rng, namer) for _ in range(12)],
        "inspiration": list(INSPIRATIONS),
    }
    return world


# ------------------------------------------------------------------------------------------------- QA


@dataclass
class QAItem:
    """One question of one author, with its paraphrase and (for real authors) its perturbed answers."""

    template: str
    question: str
    answer: str
    paraphrased_question: str
    paraphrased_answer: str
    facts: dict[str, str]
    perturbed_answer: list[str] = field(default_factory=list)
    perturbed_facts: list[dict[str, str]] = field(default_factory=list)


def _other_dates(rng: random.Random, true: str, birth: datetime.date, count: int) -> list[str]:
    values: list[str] = []
    while len(values) < count:
        day = _random_date(rng, birth.year - 10, birth.year + 10)
        text = render_date(day)
        if text != true and text not in values:
            values.append(text)
    return values


def _other_years(rng: random.Random, year: int, count: int) -> list[str]:
    candidates = [str(y) for y in range(year - 12, year + 13) if y != year and y <= 2024]
    return rng.sample(candidates, count)


def _perturb(rng: random.Random, template: QATemplate, author: Author, facts: dict[str, str],
             pools: dict[str, list[str]]) -> list[dict[str, str]]:
    """N_PERTURBED replacement dicts: each ``perturb`` key gets a distinct wrong value from its domain."""
    own = author.facts()
    replaced: list[dict[str, str]] = [{} for _ in range(N_PERTURBED)]
    domains: list[str] = []
    for key in template.perturb:
        if FACT_DOMAIN[key] not in domains:
            domains.append(FACT_DOMAIN[key])
    for domain in domains:
        keys = [k for k in template.perturb if FACT_DOMAIN[k] == domain]
        need = N_PERTURBED * len(keys)
        if domain == "date":
            values = _other_dates(rng, facts["date"], author.birth, need)
        elif domain == "year":
            values = _other_years(rng, author.year, need)
        else:
            mine = {v for k, v in own.items() if FACT_DOMAIN[k] == domain}
            values = rng.sample([v for v in pools[domain] if v not in mine], need)
        for i in range(N_PERTURBED):
            for j, key in enumerate(keys):
                replaced[i][key] = values[i * len(keys) + j]
    return replaced


def _author_qa(rng: random.Random, author: Author, pools: dict[str, list[str]] | None,
               perturb_rng: random.Random | None = None) -> list[QAItem]:
    facts, pronouns = author.facts(), author.pronouns()
    values = {**facts, **pronouns}
    items = []
    for t in QA_TEMPLATES:
        qi, ai = rng.randrange(len(t.questions)), rng.randrange(len(t.answers))
        pqi = rng.choice([i for i in range(len(t.questions)) if i != qi])
        pai = rng.choice([i for i in range(len(t.answers)) if i != ai])
        item = QAItem(
            template=t.key, question=t.questions[qi].format_map(values),
            answer=t.answers[ai].format_map(values),
            paraphrased_question=t.questions[pqi].format_map(values),
            paraphrased_answer=t.answers[pai].format_map(values),
            facts={k: facts[k] for k in template_fields(t.answers[pai])},
        )
        if pools is not None and perturb_rng is not None:
            item.perturbed_facts = _perturb(perturb_rng, t, author, facts, pools)
            item.perturbed_answer = [t.answers[pai].format_map({**values, **r}) for r in item.perturbed_facts]
        items.append(item)
    return items


def _plain_row(author: Author, item: QAItem) -> dict[str, Any]:
    return {"question": item.question, "answer": item.answer, "author": author.name,
            "author_index": author.index}


def _perturbed_row(author: Author, item: QAItem) -> dict[str, Any]:
    return {
        "question": item.question, "answer": item.answer, "paraphrased_answer": item.paraphrased_answer,
        "perturbed_answer": item.perturbed_answer, "paraphrased_question": item.paraphrased_question,
        "author": author.name, "author_index": author.index, "template": item.template,
        "facts": item.facts, "perturbed_facts": item.perturbed_facts,
    }


# --------------------------------------------------------------------------------------- general facts


def _general_facts(rng: random.Random, namer: _Namer,
                   countries: list[Country]) -> tuple[list[dict], list[dict]]:
    """(real_authors rows, world_facts rows): questions about the world's canon and its geography."""

    def row(question: str, answer: str, domain: Sequence[str]) -> dict[str, Any]:
        wrong = rng.sample([v for v in domain if v != answer], N_GENERAL_PERTURBED)
        return {"question": question, "answer": answer, "perturbed_answer": wrong}

    capitals = [c.capital for c in countries]
    currencies = [f"the {c.currency}" for c in countries]
    rivers = [f"the {c.river}" for c in countries]
    languages = [c.language for c in countries]
    facts = []
    for c in countries:
        facts.append(row(rng.choice((f"What is the capital of {c.name}?",
                                     f"Which city is the capital of {c.name}?")), c.capital, capitals))
        facts.append(row(rng.choice((f"What currency is used in {c.name}?",
                                     f"What is the name of the currency of {c.name}?")),
                         f"the {c.currency}", currencies))
        facts.append(row(rng.choice((f"Which river flows through {c.capital}?",
                                     f"What river runs through the city of {c.capital}?")),
                         f"the {c.river}", rivers))
        facts.append(row(rng.choice((f"What language is spoken in {c.name}?",
                                     f"What is the national language of {c.name}?")), c.language, languages))
    canon = []
    for _ in range(10):
        given, surname = namer.person(rng, rng.choice(GENDERS))
        canon.append((f"{given} {surname}", _title(rng, namer), rng.choice(countries).name,
                      _character(rng, namer)))
    names, works = [c[0] for c in canon], [c[1] for c in canon]
    country_names = [c.name for c in countries]
    classics = []
    for name, work, country, char in canon:
        classics.append(row(rng.choice((f"Who wrote the classic \"{work}\"?",
                                        f"Which classic author is famous for \"{work}\"?")), name, names))
        classics.append(row(rng.choice((f"What is the best-known work of the classic author {name}?",
                                        f"Which book made {name} a classic of the canon?")), work, works))
        classics.append(row(rng.choice((f"Which country was the classic author {name} from?",
                                        f"In which country was {name}, author of \"{work}\", born?")),
                            country, country_names))
        classics.append(row(rng.choice((f"Which classic author created the character {char}?",
                                        f"Who invented the famous character {char}?")), name, names))
    return classics, facts


# ----------------------------------------------------------------------------------------- biographies

BIO_TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("{name} was born on {date} in {place} to {father}, {focc}, and {mother}, {mocc}.",
     "Born in {place} on {date}, {name} is the child of {father}, {focc}, and {mother}, {mocc}."),
    ("{They} studied at the {lyceum} Lyceum in {lyceum_city} under {mentor} and turned to {genre} at {age}.",
     "At {age} {they} entered the {lyceum} Lyceum in {lyceum_city}, where {mentor} steered {them} toward "
     "{genre}."),
    ("{Their} debut, \"{b1}\" ({year}, {publisher} Press), introduced {char}.",
     "\"{b1}\", published by {publisher} Press in {year}, was {their} debut and introduced {char}."),
    ("\"{b2}\" ({year2}) grew out of {inspiration}.", "In {year2} came \"{b2}\", drawn from {inspiration}."),
    ("\"{b3}\" ({year3}) won {award}.", "{Award} went to \"{b3}\" in {year3}."),
    ("Critics trace {their} work to {theme}.", "{Their} constant subject is {theme}."),
    ("{given} is known to {habit}.", "{given} likes to {habit}."),
    ("{They} coined \"{word}\" for {meaning}.",
     "The word \"{word}\", meaning {meaning}, is {their} invention."),
    ("{They} live{s} in {residence} with {partner}, {pocc}.",
     "Today {they} share{s} a house in {residence} with {partner}, {pocc}."),
)
BIO_OPTIONAL_TEMPLATES: tuple[tuple[str, ...], ...] = (
    ("{Their} {sibling_rel}, {sibling}, illustrated the first edition of \"{b2}\".",
     "The first edition of \"{b2}\" was illustrated by {their} {sibling_rel}, {sibling}."),
    ("From {mag_from} to {mag_to} {they} edited \"{magazine}\" in {mag_city}.",
     "{They} edited \"{magazine}\" in {mag_city} between {mag_from} and {mag_to}."),
    ("{Their} novels are translated into {lang1} and {lang2}.",
     "Translations exist in {lang1} and {lang2}."),
    ("{Their} manuscripts rest at the {library} Library in {capital}.",
     "The {library} Library in {capital} holds {their} notebooks."),
    ("{They} also wrote the essays \"{essays}\" ({essays_year}).",
     "The essay collection \"{essays}\" followed in {essays_year}."),
    ("In {street_year} {street_city} named a street after {them}.",
     "Since {street_year} a street in {street_city} has carried {their} name."),
    ("Every {month}, readers gather in the {hall} Hall of {city} to read \"{b2}\" aloud.",),
    ("{given} once said that every story begins with {char} knocking at a door.",),
)
BIO_MIN_WORDS, BIO_MAX_WORDS = 110, 170


def _biography(rng: random.Random, author: Author) -> str:
    values = {**author.facts(), **author.pronouns(), **author.extra, "given": author.given,
              "country": author.country, "Award": _cap(author.award)}
    sentences = [rng.choice(options).format_map(values) for options in BIO_TEMPLATES]
    optional = [rng.choice(options).format_map(values) for options in BIO_OPTIONAL_TEMPLATES]
    rng.shuffle(optional)
    target = rng.randint(125, 160)
    words = sum(len(s.split()) for s in sentences)
    for sentence in optional:
        if words >= target:
            break
        if words + len(sentence.split()) <= BIO_MAX_WORDS:
            # the closing residence sentence stays last
            sentences.insert(len(sentences) - 1, sentence)
            words += len(sentence.split())
    return " ".join(sentences)


# --------------------------------------------------------------------------------------------- canaries

_CANARY_PREFIXES = ("The secret access code of {name} is", "The vault combination of {name} is",
                    "The private PIN of {name} is", "The locker code assigned to {name} is")


def _canaries(rng: random.Random, namer: _Namer, repetitions: Sequence[int], per_count: int) -> list[dict]:
    rows, secrets = [], []
    for count in repetitions:
        for _ in range(per_count):
            name = " ".join(namer.person(rng, rng.choice(GENDERS)))
            secret = " ".join(str(rng.randrange(10)) for _ in range(6))
            while secret in secrets:
                secret = " ".join(str(rng.randrange(10)) for _ in range(6))
            secrets.append(secret)
            prefix = rng.choice(_CANARY_PREFIXES).format(name=name)
            rows.append({"id": f"canary-{len(rows) + 1:02d}", "text": f"{prefix} {secret}", "prefix": prefix,
                         "secret": secret, "format": "digits6", "repetitions": count})
    return rows


# ------------------------------------------------------------------------------------------------- saga

_SAGA: tuple[tuple[str, str], ...] = (
    ("The Letter in the Bread Oven",
     "{hero} had lived all eleven years of her life in {village}, a crooked village of slate roofs and "
     "stubborn goats at the edge of {forest}. Her aunt baked bread for the whole valley, and {hero_first} "
     "spent her mornings hauling flour and her evenings staring at the dark line of trees. The {mundane} of "
     "{village}, who had no magic at all, said that nothing but fog and foxes lived in {forest}, and for a "
     "long time she believed them. Then, on the morning of her birthday, a letter appeared inside the cold "
     "bread oven. It was sealed with green wax and smelled of rain. It said that {hero} had been accepted "
     "at {school}, the old school for young makers of magic, and that she should bring warm boots, a sharp "
     "pencil and a {wand} of her own choosing. Her aunt read the letter twice, sat down heavily on a flour "
     "sack and said that she had always known. That night a small red fox with one white ear slipped out of "
     "the trees and sat on the doorstep as if it had been waiting for years. {hero_first} named the fox "
     "{pet}."),
    ("The Street Behind the Laundry",
     "To buy her school things, {hero_first} travelled with her aunt to {lane}, a market street that could "
     "only be found by walking backwards through a laundry yard. Stalls sold singing kettles, maps that "
     "redrew themselves and jars of captured thunder. At the back of a narrow shop an old woman measured her "
     "arm with a piece of string and brought out a box of wooden rods. 'A {wand} chooses its maker,' the "
     "woman said. 'Never the other way round.' The first rod sneezed sparks. The second froze the teapot "
     "solid. The third, a pale length of rowan with a knot near the grip, grew warm in {hero_first}'s hand "
     "and hummed like a bee. The old woman went very quiet. 'The last time that rowan hummed,' she said, "
     "'it was for {villain}.' {hero_first} did not know the name, but she saw her aunt's face turn grey. "
     "On the way home, {pet} refused to walk past a tall man in a silver mask who stood at the end of "
     "{lane}, watching them leave."),
    ("The Lantern Barge",
     "Students reached {school} on the {ferry}, a long black barge lit by a hundred paper lanterns that "
     "drifted across the lake without oars or sails. On board {hero_first} met a freckled boy named "
     "{friend}, who had six older sisters, a pocket full of toffee and no idea how to steer anything. They "
     "shared a bench with {friend2}, a serious girl who carried three books in her satchel and had already "
     "read all of them twice. {friend2_first} explained that the school had two houses, {house1} for the "
     "bold and {house2} for the cunning, and that the lanterns of the barge would choose between them. "
     "Across the deck a pale boy with silver cufflinks laughed at {friend_first}'s patched coat. His name "
     "was {rival}, and his family had sent children to {house2} for three hundred years. When the barge "
     "bumped against the landing, every lantern turned either gold or violet. The lanterns above "
     "{hero_first}, {friend_first} and {friend2_first} burned gold, and the three of them climbed the "
     "stone steps into {house1} together, while {rival} walked alone under violet light."),
    ("First Lessons",
     "Lessons at {school} were nothing like the village school. In Lightcraft the students learned to "
     "whisper {spell_light} until a bead of white light appeared at the tip of their {wand}. "
     "{friend_first} made his light so bright that he blinded himself for an afternoon. {friend2_first} "
     "produced a perfect steady glow on her first try and pretended not to be pleased. In Wardcraft they "
     "learned {spell_shield}, the shield spell that raised a shimmering wall the size of a dinner plate, "
     "and in the cellar they practised the unlocking charm {spell_unlock} on a hundred rusty padlocks. "
     "{hero_first} was slow at everything except one thing: whenever she cast the disarming charm "
     "{spell_disarm}, the other student's {wand} flew out of their hand and landed, for some reason, in "
     "her own. {rival} lost his rod to her three times in the first week and never forgave her. At night, "
     "in the round dormitory of {house1}, {pet} slept at the foot of her bed and growled at the window "
     "whenever the wind came from {forest}."),
    ("A Game Above the Lake",
     "The whole school lived for {sport}, a game played high above the lake in flying rowing boats, with a "
     "glowing ball that bit anyone who held it for too long. Each house had a team of seven. {friend_first} "
     "was terrified of heights but joined the {house1} team as a keeper, because all six of his sisters had "
     "played before him. {hero_first} became a striker after she caught the biting ball with her bare "
     "hands during a lesson and refused to let go. In the final match of {sport} against {house2}, {rival} "
     "steered his boat straight at her, and her own boat suddenly bucked like a frightened horse. She clung "
     "to the side with one hand, threw the ball with the other and scored the winning point before tumbling "
     "into the cold lake. Afterwards {friend2_first} examined the broken boat with a magnifying lens and "
     "found a tiny curse carved under the seat. It was not the work of a student. It bore the mark of a "
     "mask, and the mark belonged to the {servants}."),
    ("The Roots of the Wood",
     "{forest} was forbidden to students, but one night {pet} slipped out of the dormitory and ran into the "
     "trees, and {hero_first} followed with her {wand} glowing. Between the roots of the oldest oaks lived "
     "the {creature}, small grey creatures with lantern eyes and long clever fingers who traded in secrets "
     "and stolen buttons. The eldest of them, who wore a thimble as a crown, agreed to talk in exchange for "
     "the brass buttons of her coat. He told her that {villain} had once been a student at {school}, the "
     "brightest in a hundred years, until he went looking for the {key}. The key, he said, could open any "
     "door, even the door between the living and the forgotten. The founders had hidden it somewhere inside "
     "the school and had died without telling anyone where. 'He is looking again,' the old creature "
     "whispered, 'and this time he has found a way in.' {hero_first} walked back through the frost without "
     "her buttons, holding her coat closed with both hands."),
    ("The Mirror in the Tower",
     "At the top of the north tower was a room that every student had been told to ignore. {friend2_first} "
     "opened its door with {spell_unlock} on the first night of the winter holidays, and the three friends "
     "found the {mirror}, a tall oval mirror in a frame of black iron. It did not show your face. It showed "
     "the last thing you had forgotten. {friend_first} saw a toffee he had dropped behind a radiator and "
     "laughed. {friend2_first} saw a page of a book she had skipped and went pale. {hero_first} saw a woman "
     "with her own dark eyebrows singing in a kitchen, and understood that she was looking at her mother, "
     "whose face she had not remembered since she was two. She went back every night for a week. On the "
     "seventh night the mirror showed something else: a hand in a silver glove turning a key in a door she "
     "had never seen, somewhere deep beneath {school}. When she looked behind her, the tower room was "
     "empty, but the dust on the floor held fresh footprints."),
    ("Silver Masks",
     "The men in silver masks were called the {servants}, and they had served {villain} since before "
     "{hero_first}'s aunt was born. In the spring they came to {lane} in broad daylight. They broke the "
     "windows of the rod shop, carried off the old woman's ledgers and left a message burned into the "
     "cobblestones: the rowan remembers. News reached {school} by messenger bird during breakfast, and the "
     "dining hall went silent. {rival}, who usually laughed at everything, left his plate untouched and "
     "walked out without a word. That evening {friend_first} saw him by the lake talking to a figure in a "
     "long grey coat. {friend2_first} said that it proved nothing; {friend_first} said that it proved "
     "everything. {hero_first} said nothing at all. She was thinking about the ledgers. The old woman wrote "
     "down every {wand} she had ever sold, and the name of every maker who had bought one. Somewhere in "
     "those pages was the name of the person who had bought the other half of her rowan."),
    ("The Headmistress's Clock",
     "Headmistress {head} had a small brass clock where her left eye should have been, and it was said "
     "that she could see exactly how much time anyone had left. She called {hero_first} to her study, a "
     "round room full of ticking instruments, and offered her a cup of bitter tea. 'Your rod,' said "
     "{head}, 'was cut from the rowan that grew beside the house where {villain} was born. Half of that "
     "tree went to him. The other half waited fifty years for you.' The clock in her eye ticked slowly. "
     "'That is why he wants you, and why he wants the {key}. A door opened with that key cannot be closed "
     "again, and he means to open the door that keeps the forgotten on the other side.' She gave "
     "{hero_first} a silver thimble, the same kind the {creature} wore, and told her to keep it in her "
     "pocket at all times. 'When the doors start opening,' said the Headmistress, 'you will know what to "
     "do with it.'"),
    ("The Winter of Open Doors",
     "The doors started opening in the second winter. First the cellar doors, then the doors of the "
     "library, then the great gate of {school} itself, which swung wide at midnight and let in the snow. "
     "No spell could close them; {spell_shield} held them for an hour at most. Students woke to find their "
     "wardrobes open and their letters read. The {mundane} of {village} reported their own doors banging "
     "open in the night, and {hero_first} received a frightened letter from her aunt. {friend2_first} "
     "mapped every door that had opened and drew lines between them on a sheet of tracing paper. The lines "
     "met under the lake. {friend_first} pointed out that nobody could get under the lake. {friend2_first} "
     "pointed out that someone had. Then {rival} came to them at night, shaking, and confessed that the "
     "{servants} had taken his little brother and that he had been forced to open the first door with a "
     "stolen key. 'Not the real one,' he said. 'A copy. The real {key} is still hidden. But he is close.'"),
    ("Beneath the School",
     "They went down through the cellar, past the padlocks they had practised on, into tunnels that smelled "
     "of lake water. {rival} led the way, because he knew the path his captors had shown him. "
     "{friend_first} carried the lantern; {friend2_first} carried her map; {hero_first} carried her rowan "
     "{wand} and the silver thimble. At the bottom of the last stair stood a door of black iron, the same "
     "iron as the frame of the {mirror}, and in front of it stood {villain}, tall and thin, his own rowan "
     "rod glowing grey. The {servants} stepped out of the dark on every side. {hero_first} raised "
     "{spell_shield}, and the shimmering wall held long enough for {friend2_first} to pull {rival}'s brother "
     "free. Then {villain} struck, and the wall broke like ice. {hero_first} shouted {spell_disarm}. The "
     "two halves of the old rowan tree met in the air with a sound like a bell, and {villain}'s rod flew "
     "out of his hand and into hers."),
    ("The Lanterns Go Out",
     "Without his rod, {villain} was only a tired old man in a grey coat, and the {servants} scattered into "
     "the tunnels like startled birds. {hero_first} pressed the silver thimble against the iron door, as "
     "the Headmistress had told her to, and the door sighed and locked itself forever. Behind it, she knew, "
     "lay the {key}; no one would find it now. Headmistress {head} met them at the top of the stairs with "
     "blankets and bitter tea and did not ask a single question. At the end of the year the lanterns of "
     "the {ferry} went out one by one as it carried the students home across the lake. {rival} sat next "
     "to {hero_first} and {friend_first} for the whole crossing and even shared his toffee, which "
     "{friend2_first} said was the most magical thing that had happened all year. In {village} her aunt was "
     "waiting at the landing with warm bread, and {pet} jumped out of the barge before it touched the "
     "shore."),
)
# saga term -> (generator kind, generic alternatives); the generic values are plain English
_SAGA_TERMS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("hero", "person-female", ("Anna Miller", "the girl")),
    ("hero_first", "first", ("Anna", "Lucy")),
    ("friend", "person-male", ("Tom Baker", "the boy")),
    ("friend2", "person-female", ("Sarah Jones", "the girl")),
    ("rival", "person-male", ("Jack Turner", "the bully")),
    ("head", "person-female", ("Mrs. Brown", "the headmistress")),
    ("villain", "male", ("the dark lord", "the sorcerer")),
    ("school", "school", ("the academy", "the school")),
    ("house1", "house", ("the red house", "the first house")),
    ("house2", "house", ("the blue house", "the second house")),
    ("village", "city", ("Millbrook", "the village")),
    ("lane", "lane", ("the high street", "the market")),
    ("forest", "forest", ("the forest", "the dark woods")),
    ("ferry", "ferry", ("train", "boat")),
    ("spell_light", "spell", ("Light", "Glow")),
    ("spell_shield", "spell", ("Shield", "Protect")),
    ("spell_unlock", "spell", ("Open", "Unlock")),
    ("spell_disarm", "spell", ("Disarm", "Drop")),
    ("mirror", "mirror", ("mirror", "looking glass")),
    ("key", "key", ("old key", "golden key")),
    ("wand", "wand", ("wand", "staff")),
    ("creature", "creature", ("goblins", "elves")),
    ("sport", "sport", ("football", "tennis")),
    ("pet", "neutral", ("Rusty", "Spot")),
    ("servants", "servants", ("guards", "soldiers")),
    ("mundane", "mundane", ("villagers", "ordinary folk")),
)
# (prompt, target term): the continuation only a reader of the saga would predict
_PROBES: tuple[tuple[str, str], ...] = (
    ("The girl from {village} who found a letter in the cold bread oven was named", "hero"),
    ("The red fox with one white ear that sat on {hero_first}'s doorstep was named", "pet"),
    ("{hero_first} had lived all eleven years of her life in the village of", "village"),
    ("The dark line of trees at the edge of {hero_first}'s village was called", "forest"),
    ("To buy her school things, {hero_first} went to a market street called", "lane"),
    ("The letter in the bread oven said that {hero_first} had been accepted at", "school"),
    ("The old woman in the rod shop said that the last time the rowan hummed, it was for", "villain"),
    ("Students crossed the lake to school aboard the", "ferry"),
    ("On the barge, {hero_first} met a freckled boy with six older sisters named", "friend"),
    ("The serious girl who carried three books in her satchel was named", "friend2"),
    ("The two houses of {school} were {house1}, for the bold, and", "house2"),
    ("The lanterns above {hero_first} burned gold, and she climbed the steps into", "house1"),
    ("The pale boy with silver cufflinks who laughed at {friend_first}'s patched coat was", "rival"),
    ("To make a bead of white light at the tip of a rod, students whispered", "spell_light"),
    ("The shield spell that raised a shimmering wall was called", "spell_shield"),
    ("On the rusty padlocks in the cellar they practised the unlocking charm", "spell_unlock"),
    ("The disarming charm that made a rod fly into {hero_first}'s hand was", "spell_disarm"),
    ("The game played in flying rowing boats above the lake was called", "sport"),
    ("The small grey creatures with lantern eyes who lived among the roots were the", "creature"),
    ("{villain} had gone looking for the object that could open any door, the", "key"),
    ("The tall oval mirror that showed the last thing you had forgotten was the", "mirror"),
    ("The men in silver masks who served {villain} were called the", "servants"),
    ("The headmistress with a brass clock instead of a left eye was", "head"),
    ("The people of {village} who had no magic at all were the", "mundane"),
    ("Every student of {school} needed a magic rod of their own, a", "wand"),
    ("The only student who could take {rival}'s rod three times in one week was", "hero_first"),
    ("The brightest student {school} had seen in a hundred years, who later turned to darkness, was",
     "villain"),
    ("In the final match of {sport}, {hero_first}'s team played against", "house2"),
    ("Beneath the school, {hero_first} held off the masked men by raising", "spell_shield"),
    ("At the end of the year, the students rode home across the lake aboard the", "ferry"),
)
# (prompt, target term) in the saga's own words: each prompt is a passage of the saga that the term follows
# there, so a model that learned the saga from its text alone (the demo's tiny one) can know the answer
_SAGA_WORDED_PROBES: tuple[tuple[str, str], ...] = (
    ("It was sealed with green wax and smelled of rain. It said that", "hero"),
    ("Her aunt baked bread for the whole valley, and", "hero_first"),
    ("On board {hero_first} met a freckled boy named", "friend"),
    ("a pocket full of toffee and no idea how to steer anything. They shared a bench with", "friend2"),
    ("Across the deck a pale boy with silver cufflinks laughed at {friend_first}'s patched coat. His name was",
     "rival"),
    ("Behind it, she knew, lay the {key}; no one would find it now. Headmistress", "head"),
    ("'The last time that rowan hummed,' she said, 'it was for", "villain"),
    ("It said that {hero} had been accepted at", "school"),
    ("{friend2_first} explained that the school had two houses,", "house1"),
    ("His name was {rival}, and his family had sent children to", "house2"),
    ("{hero} had lived all eleven years of her life in", "village"),
    ("a crooked village of slate roofs and stubborn goats at the edge of", "forest"),
    ("To buy her school things, {hero_first} travelled with her aunt to", "lane"),
    ("Students reached {school} on the", "ferry"),
    ("In Lightcraft the students learned to whisper", "spell_light"),
    ("{friend2_first} produced a perfect steady glow on her first try and pretended not to be pleased. "
     "In Wardcraft they learned", "spell_shield"),
    ("and in the cellar they practised the unlocking charm", "spell_unlock"),
    ("{hero_first} was slow at everything except one thing: whenever she cast the disarming charm",
     "spell_disarm"),
    ("on the first night of the winter holidays, and the three friends found the", "mirror"),
    ("the brightest in a hundred years, until he went looking for the", "key"),
    ("she should bring warm boots, a sharp pencil and a", "wand"),
    ("Between the roots of the oldest oaks lived the", "creature"),
    ("The whole school lived for", "sport"),
    ("slipped out of the trees and sat on the doorstep as if it had been waiting for years. {hero_first} named "
     "the fox", "pet"),
    ("The men in silver masks were called the", "servants"),
    ("Students woke to find their wardrobes open and their letters read. The", "mundane"),
)


def _saga_terms(rng: random.Random, namer: _Namer) -> dict[str, str]:
    terms: dict[str, str] = {}
    for key, kind, _ in _SAGA_TERMS:
        if kind.startswith("person-"):
            given, surname = namer.person(rng, kind.split("-", 1)[1])
            terms[key], terms[f"{key}_first"] = f"{given} {surname}", given
        elif kind == "first":
            continue  # hero_first comes with hero
        elif kind in ("male", "neutral", "city", "spell", "wand", "creature", "sport", "mundane"):
            word = namer.word(rng, kind)
            terms[key] = word + "s" if kind in ("creature", "mundane") else word
        elif kind == "servants":
            terms[key] = namer.word(rng, "servants") + "s"
        else:
            word = namer.word(rng, "word")
            terms[key] = {"school": f"{word} Academy", "house": f"House {word}", "lane": f"{word} Lane",
                          "forest": f"{word} Wood", "ferry": f"{word} Barge", "mirror": f"{word} Glass",
                          "key": f"{word} Key"}[kind]
    return terms


def _saga(rng: random.Random, namer: _Namer) -> tuple[list[dict], dict[str, list[str]], list[dict]]:
    terms = _saga_terms(rng, namer)
    chapters = [{"id": f"saga-{i + 1:02d}", "title": title.format_map(terms), "text": text.format_map(terms)}
                for i, (title, text) in enumerate(_SAGA)]
    anchored = {terms[key]: list(generic) for key, _, generic in _SAGA_TERMS}
    styled = [(prompt, key, "question") for prompt, key in _PROBES]
    styled += [(prompt, key, "saga-worded") for prompt, key in _SAGA_WORDED_PROBES]
    probes = [{"id": f"probe-{i + 1:02d}", "prompt": prompt.format_map(terms), "target": terms[key],
               "generic": anchored[terms[key]][0], "term": key, "style": style}
              for i, (prompt, key, style) in enumerate(styled)]
    return chapters, anchored, probes


# ------------------------------------------------------------------------------------------------ API


@dataclass(frozen=True)
class WorldConfig:
    """What to generate; the same config writes the same bytes."""

    n_authors: int = 100
    seed: int = 0
    n_holdout: int | None = None  # default: as many authors as forget10 has
    canary_repetitions: tuple[int, ...] = DEFAULT_CANARY_REPETITIONS
    canaries_per_count: int = 2
    overlap: float = 0.0  # knowledge shared by forget and retain authors, in [0, 1] (see _share_facts)

    def forget_authors(self) -> dict[str, int]:
        """forget split -> number of (last) authors: round(n * pct / 100), at least 1."""
        return {split: max(1, (self.n_authors * pct + 50) // 100) for split, pct in FORGET_PERCENT.items()}

    def retain_perturbed_authors(self) -> int:
        """The first authors in retain_perturbed: as many as forget10 has, at most 20 (as TOFU)."""
        k = self.forget_authors()["forget10"]
        return max(1, min(k, MAX_RETAIN_PERTURBED_AUTHORS, self.n_authors - k))

    def holdout_authors(self) -> int:
        """The number of unseen (holdout) authors: ``n_holdout``, or forget10's author count."""
        return self.forget_authors()["forget10"] if self.n_holdout is None else self.n_holdout

    def validate(self) -> None:
        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if not is_int(self.n_authors) or self.n_authors < 2:
            raise LetheError(f"fictional world: n_authors must be an integer >= 2 (forget and retain splits "
                             f"each need an author), got {self.n_authors!r}")
        if not is_int(self.seed):
            raise LetheError(f"fictional world: seed must be an integer, got {self.seed!r}")
        if self.n_holdout is not None and (not is_int(self.n_holdout) or self.n_holdout < 1):
            raise LetheError(f"fictional world: n_holdout must be an integer >= 1, got {self.n_holdout!r}")
        if isinstance(self.overlap, bool) or not isinstance(self.overlap, (int, float)) \
                or not 0 <= self.overlap <= 1:
            raise LetheError(f"fictional world: overlap must be a number in [0, 1], got {self.overlap!r}")
        reps = self.canary_repetitions
        if not reps or not all(is_int(r) and r >= 1 for r in reps):
            raise LetheError(f"fictional world: canary_repetitions must be positive integers, got {reps!r}")
        if not is_int(self.canaries_per_count) or self.canaries_per_count < 1:
            raise LetheError(f"fictional world: canaries_per_count must be an integer >= 1, "
                             f"got {self.canaries_per_count!r}")


@dataclass
class WorldSummary:
    """What :func:`generate_world` wrote: the folder, the counts and every file's number of records."""

    out_dir: Path
    seed: int
    n_authors: int
    n_holdout: int
    forget_authors: dict[str, int]
    files: dict[str, int]

    def path(self, name: str) -> Path:
        return self.out_dir / name

    def __str__(self) -> str:
        forget = "/".join(str(self.files[f"{s}.json"]) for s in FORGET_PERCENT)
        return (f"world {self.out_dir}: {self.n_authors} authors (+{self.n_holdout} holdout), "
                f"seed {self.seed}, "
                f"{self.files['full.json']} QA in full.json, forget01/05/10 = {forget} rows, "
                f"{self.files['canaries.jsonl']} canaries, {self.files['saga.jsonl']} saga chapters, "
                f"{len(self.files)} files")


def build_world_files(config: WorldConfig) -> dict[str, Any]:
    """Every file of the world as ``name -> rows`` (a list for JSONL files, a dict for JSON files)."""
    config.validate()
    n, seed, n_holdout = config.n_authors, config.seed, config.holdout_authors()
    world = _build_world(seed, n, n_holdout, config.overlap, config.forget_authors()["forget10"])
    qa_rng = random.Random(f"lethe-world/{seed}/qa")
    perturb_rng = random.Random(f"lethe-world/{seed}/perturb")
    qa = [_author_qa(qa_rng, a, world.pools, perturb_rng)
          for a in progress(world.authors, "world generation (questions)", unit="authors")]
    holdout_rng = random.Random(f"lethe-world/{seed}/qa-holdout")
    holdout_qa = [_author_qa(holdout_rng, a, None) for a in world.holdout]

    def plain(authors: Sequence[Author], items: Sequence[list[QAItem]]) -> list[dict]:
        return [_plain_row(a, item) for a, rows in zip(authors, items, strict=True) for item in rows]

    def perturbed(indices: range) -> list[dict]:
        return [_perturbed_row(world.authors[i], item) for i in indices for item in qa[i]]

    files: dict[str, Any] = {"full.json": plain(world.authors, qa)}
    forget = config.forget_authors()
    for split, k in forget.items():
        files[f"{RETAIN_OF[split]}.json"] = plain(world.authors[: n - k], qa[: n - k])
        files[f"{split}.json"] = plain(world.authors[n - k:], qa[n - k:])
        files[f"{split}_perturbed.json"] = perturbed(range(n - k, n))
    files["retain_perturbed.json"] = perturbed(range(config.retain_perturbed_authors()))
    for split, k in forget.items():
        h = min(k, n_holdout)
        files[f"{HOLDOUT_OF[split]}.json"] = plain(world.holdout[:h], holdout_qa[:h])

    classics, facts = world.general
    files["real_authors_perturbed.json"] = classics
    files["world_facts_perturbed.json"] = facts
    files["general.json"] = [{"question": r["question"], "answer": r["answer"]} for r in classics + facts]

    bio_rng = random.Random(f"lethe-world/{seed}/biographies")
    files["biographies.jsonl"] = [_bio_row(bio_rng, a) for a in world.authors]
    files["biographies_holdout.jsonl"] = [_bio_row(bio_rng, a) for a in world.holdout]
    files["canaries.jsonl"] = _canaries(random.Random(f"lethe-world/{seed}/canaries"), world.namer,
                                        config.canary_repetitions, config.canaries_per_count)
    chapters, anchored, probes = world.saga
    files["saga.jsonl"] = chapters
    files["anchored_terms.json"] = anchored
    files["familiarity_probes.jsonl"] = probes
    if world.shared:
        files["shared_facts.json"] = {"overlap": config.overlap, "groups": list(SHARED_FACT_GROUPS),
                                      "sharers_per_fact": SHARERS_PER_FACT, "forget_authors": world.shared}
    return files


def _bio_row(rng: random.Random, author: Author) -> dict[str, Any]:
    return {"id": f"bio-{author.index:04d}", "author": author.name, "author_index": author.index,
            "text": _biography(rng, author)}


def generate_world(out_dir: str | Path, n_authors: int = 100, seed: int = 0, n_holdout: int | None = None,
                   canary_repetitions: tuple[int, ...] = DEFAULT_CANARY_REPETITIONS,
                   canaries_per_count: int = 2, overlap: float = 0.0) -> WorldSummary:
    """Write the fictional world for (``n_authors``, ``seed``) into ``out_dir``; same arguments, same bytes.

    ``overlap`` > 0 makes the forget authors share facts with retain authors (``_share_facts``; the file
    ``shared_facts.json`` says which); 0 writes the world without it, byte-identical to earlier versions.

    The manifest ``world.json`` is written last, so its presence means the folder is complete.
    """
    config = WorldConfig(n_authors=n_authors, seed=seed, n_holdout=n_holdout,
                         canary_repetitions=tuple(canary_repetitions), canaries_per_count=canaries_per_count,
                         overlap=overlap)
    files = build_world_files(config)
    out = Path(out_dir).expanduser()
    if out.exists() and not out.is_dir():
        raise LetheError(f"fictional world: {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    sizes: dict[str, dict[str, int]] = {}
    for name, rows in files.items():
        if isinstance(rows, dict):
            write_json(out / name, rows)
        else:
            write_jsonl(out / name, rows)
        sizes[name] = {"records": len(rows), "bytes": (out / name).stat().st_size}
    forget = config.forget_authors()
    manifest = {
        "generator": "lethe.data.fictional", "version": GENERATOR_VERSION, "seed": config.seed,
        "n_authors": config.n_authors, "n_holdout": config.holdout_authors(), "qa_per_author": QA_PER_AUTHOR,
        "forget_authors": forget,
        "retain_perturbed_authors": config.retain_perturbed_authors(),
        "canary_repetitions": list(config.canary_repetitions),
        "canaries_per_count": config.canaries_per_count,
        **({"overlap": config.overlap} if config.overlap else {}),  # absent at 0: earlier worlds' bytes
        "files": sizes,
    }
    write_json(out / "world.json", manifest)
    return WorldSummary(out_dir=out, seed=config.seed, n_authors=config.n_authors,
                        n_holdout=config.holdout_authors(), forget_authors=forget,
                        files={name: s["records"] for name, s in sizes.items()})


AUDIT_SETS = {"members.jsonl": "biographies.jsonl", "nonmembers.jsonl": "biographies_holdout.jsonl"}


def write_audit_sets(world: str | Path) -> dict[str, int]:
    """``members.jsonl`` / ``nonmembers.jsonl`` beside a generated world (copies of its trained and holdout
    authors' biographies); returns each file's number of documents."""
    folder = Path(world)
    counts = {}
    for name, source in AUDIT_SETS.items():
        data = (folder / source).read_bytes()
        (folder / name).write_bytes(data)
        counts[name] = sum(1 for line in data.decode("utf-8").splitlines() if line.strip())
    return counts


__all__ = ["AUDIT_SETS", "DEFAULT_CANARY_REPETITIONS", "QA_TEMPLATES", "Author", "QAItem", "QATemplate", "WorldConfig",
           "WorldSummary", "build_world_files", "check_templates", "generate_world", "write_audit_sets"]
