"""The general-instruction replay set mixed into every adapter refresh, and the fixed general set
whose perplexity the evaluation gate watches.

Written for this project from templates with checked answers (capitals, arithmetic, opposites,
units, days and months, short how-to tips), so it ships with the code and needs no download.
`replay_sets()` returns them with GENERAL, a separate hand-written set that is never trained on and
measures general ability before and after.
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class Pair:
    question: str
    answer: str
    source: str = "replay"
    group: str = ""  # personal pairs: the wording they belong to (held out together)


CAPITALS = {
    "France": "Paris", "Germany": "Berlin", "Italy": "Rome", "Spain": "Madrid", "Portugal": "Lisbon",
    "Japan": "Tokyo", "Canada": "Ottawa", "Australia": "Canberra", "Egypt": "Cairo", "Kenya": "Nairobi",
    "Norway": "Oslo", "Sweden": "Stockholm", "Finland": "Helsinki", "Poland": "Warsaw", "Greece": "Athens",
    "Ireland": "Dublin", "Austria": "Vienna", "Hungary": "Budapest", "Peru": "Lima", "Chile": "Santiago",
    "Argentina": "Buenos Aires", "Mexico": "Mexico City", "India": "New Delhi", "China": "Beijing",
    "South Korea": "Seoul", "Thailand": "Bangkok", "Vietnam": "Hanoi", "Turkey": "Ankara",
    "Belgium": "Brussels", "the Netherlands": "Amsterdam", "Denmark": "Copenhagen", "Cuba": "Havana",
    "Morocco": "Rabat", "Ghana": "Accra", "Nigeria": "Abuja", "Colombia": "Bogotá",
}  # fmt: skip

OPPOSITES = {
    "hot": "cold", "big": "small", "fast": "slow", "happy": "sad", "early": "late", "light": "dark",
    "open": "closed", "full": "empty", "strong": "weak", "young": "old", "high": "low", "loud": "quiet",
    "rich": "poor", "wet": "dry", "hard": "soft", "long": "short", "thick": "thin", "up": "down",
    "inside": "outside", "first": "last", "true": "false", "begin": "end", "push": "pull", "win": "lose",
    "buy": "sell", "give": "take", "arrive": "leave", "remember": "forget", "accept": "refuse", "near": "far",
}  # fmt: skip

DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]
MONTHS = [
    ("January", 31), ("February", 28), ("March", 31), ("April", 30), ("May", 31), ("June", 30),
    ("July", 31), ("August", 31), ("September", 30), ("October", 31), ("November", 30), ("December", 31),
]  # fmt: skip

TIPS = [
    ("sleeping better", "Keep a regular bedtime and put screens away for the last half hour before sleep."),
    ("staying focused", "Work in short blocks with one task at a time, and silence notifications meanwhile."),
    ("saving money", "Write down what you spend for a month; the patterns show you where to cut."),
    ("learning a language", "Practise a little every day, and speak out loud even when it feels awkward."),
    (
        "running a first 10k",
        "Build up slowly, about ten percent more distance each week, with easy rest days.",
    ),
    ("writing an email", "Put the request in the first sentence and keep the rest short."),
    (
        "cooking rice",
        "Rinse it, use about one and a half cups of water per cup, and let it rest covered after cooking.",
    ),
    (
        "a job interview",
        "Prepare two short stories about problems you solved, and ask them a real question at the end.",
    ),
    (
        "keeping plants alive",
        "Check the soil with a finger before watering; most houseplants die from too much water.",
    ),
    ("reading more", "Carry a book with you and read in the small gaps of the day."),
    (
        "public speaking",
        "Rehearse out loud twice and slow down; pauses feel longer to you than to the audience.",
    ),
    ("drinking more water", "Keep a filled bottle in sight and finish it before each meal."),
    (
        "a long flight",
        "Drink water, walk the aisle every couple of hours, and set your watch to the destination time.",
    ),
    ("studying for an exam", "Test yourself with questions instead of rereading your notes."),
    ("a tidy desk", "Clear it completely at the end of each day, keeping only what you use daily."),
    ("making friends in a new city", "Join one club that meets weekly, so you see the same people again."),
    ("backing up files", "Keep three copies on two kinds of storage, with one copy away from home."),
    (
        "a strong password",
        "Use a long phrase of several random words, and a password manager to remember it.",
    ),
    (
        "waking up earlier",
        "Move your alarm fifteen minutes earlier each week and get daylight soon after waking.",
    ),
    ("being on time", "Plan to arrive ten minutes early and leave when your reminder goes off."),
]

WORDS_FR = {
    "hello": "bonjour", "thank you": "merci", "cat": "chat", "dog": "chien", "house": "maison",
    "water": "eau", "bread": "pain", "book": "livre", "friend": "ami", "car": "voiture", "apple": "pomme",
    "school": "école", "sun": "soleil", "moon": "lune", "tree": "arbre", "cheese": "fromage",
}  # fmt: skip

COLOURS = {
    "grass": "green", "the sky on a clear day": "blue", "snow": "white", "a ripe banana": "yellow",
    "coal": "black", "a ripe tomato": "red", "an orange": "orange", "milk": "white", "a lemon": "yellow",
    "a strawberry": "red", "chocolate": "brown", "a carrot": "orange",
}  # fmt: skip


def _all_pairs() -> list[Pair]:
    rng = random.Random(20261126)
    pairs: list[Pair] = []
    for country, city in CAPITALS.items():
        pairs.append(Pair(f"What is the capital of {country}?", f"The capital of {country} is {city}."))
    for word, opposite in OPPOSITES.items():
        pairs.append(Pair(f"What is the opposite of '{word}'?", f"The opposite of '{word}' is '{opposite}'."))
    for _ in range(40):
        a, b = rng.randint(2, 99), rng.randint(2, 99)
        pairs.append(Pair(f"What is {a} plus {b}?", f"{a} plus {b} is {a + b}."))
    for _ in range(25):
        a, b = rng.randint(2, 12), rng.randint(2, 12)
        pairs.append(Pair(f"What is {a} times {b}?", f"{a} times {b} is {a * b}."))
    for _ in range(20):
        km = rng.randint(2, 40)
        pairs.append(
            Pair(f"How many metres are in {km} kilometres?", f"{km} kilometres are {km * 1000} metres.")
        )
    for _ in range(20):
        n = rng.randint(3, 500)
        parity = "even" if n % 2 == 0 else "odd"
        pairs.append(Pair(f"Is {n} even or odd?", f"{n} is {parity}."))
    for i, day in enumerate(DAYS):
        pairs.append(Pair(f"Which day comes after {day}?", f"{DAYS[(i + 1) % 7]} comes after {day}."))
        pairs.append(Pair(f"Which day comes before {day}?", f"{DAYS[i - 1]} comes before {day}."))
    for i, (month, days) in enumerate(MONTHS):
        extra = " (29 in a leap year)" if month == "February" else ""
        pairs.append(Pair(f"How many days does {month} have?", f"{month} has {days} days{extra}."))
        pairs.append(
            Pair(f"Which month comes after {month}?", f"{MONTHS[(i + 1) % 12][0]} comes after {month}.")
        )
    for topic, tip in TIPS:
        pairs.append(Pair(f"Give me one tip for {topic}.", tip))
    for en, fr in WORDS_FR.items():
        pairs.append(Pair(f"How do you say '{en}' in French?", f"'{en.capitalize()}' in French is '{fr}'."))
    for thing, colour in COLOURS.items():
        pairs.append(Pair(f"What colour is {thing}?", f"{thing[0].upper() + thing[1:]} is {colour}."))
    for _ in range(20):
        nums = rng.sample(range(1, 100), 4)
        shown = ", ".join(map(str, nums))
        pairs.append(
            Pair(
                f"Sort these numbers from smallest to largest: {shown}.",
                ", ".join(map(str, sorted(nums))) + ".",
            )
        )
    for word in [
        "planet",
        "garden",
        "window",
        "letter",
        "river",
        "market",
        "pencil",
        "castle",
        "orange",
        "rocket",
    ]:
        pairs.append(Pair(f"Spell '{word}' backwards.", f"'{word}' backwards is '{word[::-1]}'."))
        pairs.append(
            Pair(f"How many letters are in the word '{word}'?", f"'{word}' has {len(word)} letters.")
        )
    return pairs


# The gate's general set: written apart from the templates above, in other shapes (explain,
# define, advise, rewrite), so it measures what training on the replay cannot teach by rote. A
# slice of the templated pairs measured that too kindly: training on their siblings lowered its
# perplexity by half, so it could not show a loss elsewhere.
GENERAL: list[tuple[str, str]] = [
    ("Why do leaves change colour in autumn?", "As days shorten, trees stop making green chlorophyll, so the yellow and orange pigments underneath show, and some trees make red ones."),
    ("What does a thermometer measure?", "A thermometer measures temperature: how hot or cold something is."),
    ("Explain what a vaccine does in one sentence.", "A vaccine trains the immune system to recognise a germ, so the body can fight it off quickly if it ever meets it."),
    ("What is the difference between weather and climate?", "Weather is what the air does on a given day; climate is the typical pattern of weather in a place over many years."),
    ("Why do we have seasons?", "The Earth's axis is tilted, so each half of the planet gets more direct sunlight for part of the year and less for the rest."),
    ("What is a noun?", "A noun is a word that names a person, place, thing or idea, like 'teacher', 'city' or 'freedom'."),
    ("Rewrite this more politely: Send me the report now.", "Could you please send me the report when you have a moment?"),
    ("Suggest a name for a small bakery.", "How about 'The Morning Crumb'?"),
    ("What should I do if a pan of oil catches fire?", "Turn off the heat and cover the pan with a lid or a damp towel. Never pour water on it."),
    ("How can I remember a new person's name?", "Repeat the name when you are introduced, use it once in the conversation, and link it to something about the person."),
    ("What is photosynthesis?", "Photosynthesis is how plants use sunlight, water and carbon dioxide to make sugar, releasing oxygen."),
    ("Why is the sea salty?", "Rivers carry dissolved minerals from rocks into the sea, and when seawater evaporates the salt stays behind."),
    ("Write a one-line birthday message for a colleague.", "Happy birthday! Wishing you a great year ahead, with plenty to celebrate."),
    ("What does 'procrastinate' mean?", "To procrastinate is to keep putting off something you should do."),
    ("How do I boil an egg so the yolk is soft?", "Lower the egg into boiling water, cook it for about six minutes, then put it in cold water."),
    ("Why does ice float on water?", "Water expands when it freezes, so ice is less dense than liquid water and floats."),
    ("What is a budget?", "A budget is a plan for how much money you expect to earn and how you will spend or save it."),
    ("Give me a synonym for 'happy'.", "Cheerful."),
    ("What is the main job of the heart?", "The heart pumps blood around the body, carrying oxygen and nutrients to every part."),
    ("How can I fall asleep more easily?", "Keep regular hours, avoid screens and caffeine late in the day, and keep your bedroom cool and dark."),
    ("What is gravity?", "Gravity is the force that pulls objects with mass towards each other, which is why things fall to the ground."),
    ("Summarise the story of Cinderella in one sentence.", "A mistreated young woman goes to a royal ball with help from her fairy godmother, loses a glass slipper, and is found by the prince."),
    ("Why do we need to drink water?", "Water keeps the body's temperature steady, carries nutrients, and helps remove waste."),
    ("What is an adjective?", "An adjective is a word that describes a noun, like 'tall', 'blue' or 'quiet'."),
    ("How do plants get water from the soil?", "Their roots absorb water, and it travels up through the stem to the leaves."),
    ("Recommend a way to start learning to cook.", "Start with a few simple dishes you like, such as an omelette, a pasta sauce and a soup, and cook each several times."),
    ("What causes thunder?", "Lightning heats the air so fast that it expands explosively, and that shock wave is the sound of thunder."),
    ("Explain what recycling is.", "Recycling turns used materials like paper, glass and metal into new products instead of throwing them away."),
    ("What is a good way to prepare for a job interview?", "Learn about the company, practise answering common questions aloud, and prepare a few questions of your own."),
    ("Why do cats purr?", "Cats usually purr when they are relaxed and content, but they also purr to soothe themselves when stressed."),
    ("What is the difference between a lake and a sea?", "A lake is a body of water surrounded by land, usually fresh; a sea is salty and connected to an ocean."),
    ("Turn this into a question: The museum opens at nine.", "When does the museum open?"),
    ("How does a compass work?", "Its magnetic needle lines up with the Earth's magnetic field, so one end points roughly north."),
    ("What is a healthy breakfast idea?", "Porridge with fruit and a handful of nuts is filling and healthy."),
    ("Why do birds migrate?", "Many birds fly to warmer places in winter to find food, and return in spring to breed."),
    ("Write a short thank-you note to a neighbour who watered my plants.", "Thank you so much for watering my plants while I was away. They look wonderful, and I owe you one!"),
]  # fmt: skip


def replay_sets() -> tuple[list[Pair], list[Pair]]:
    """(replay pairs for training, the fixed general set for the perplexity gate), disjoint."""
    return _all_pairs(), [Pair(q, a, source="general") for q, a in GENERAL]


# Made-up facts of made-up people (kinds unlike bench/personal_cases.py's), shown the way recall
# shows them, then asked about: an adapter that knows its person's facts otherwise tends to
# answer with one of those even when the recalled lines hold the answer (measured: with recall,
# adapters answered 3 of 13 facts found only in recalled turns, the base model 9).
CONTEXT_FACTS: list[tuple[str, str, str, list[str]]] = [
    ("My cat is called {0}.", "What is my cat called?", "Your cat is called {0}.", ["Tom", "Luna", "Miso", "Felix"]),
    ("My brother lives in {0}.", "Where does my brother live?", "Your brother lives in {0}.", ["Dublin", "Quito", "Perth", "Riga"]),
    ("My favourite colour is {0}.", "What is my favourite colour?", "Your favourite colour is {0}.", ["green", "orange", "navy blue", "yellow"]),
    ("I'm reading {0} at the moment.", "What book am I reading?", "You're reading {0}.", ["Dune", "Middlemarch", "The Hobbit", "Beloved"]),
    ("My manager is called {0}.", "Who is my manager?", "Your manager is {0}.", ["Helen", "Omar", "Keiko", "Bruno"]),
    ("I go swimming on {0}.", "Which day do I go swimming?", "You go swimming on {0}.", ["Mondays", "Thursdays", "Saturdays", "Sundays"]),
    ("My flat has {0} rooms.", "How many rooms does my flat have?", "Your flat has {0} rooms.", ["two", "three", "four", "five"]),
    ("My daughter is {0} years old.", "How old is my daughter?", "Your daughter is {0} years old.", ["six", "nine", "twelve", "fifteen"]),
]  # fmt: skip


def context_pairs(count: int, seed: int = 0) -> list[Pair]:
    """`count` questions answered from recalled lines (core.llm.prompt's inline layout) about
    made-up facts: they teach an adapter to read what recall shows, never anyone's data."""
    from datetime import UTC, datetime, timedelta

    from core.llm.prompt import PromptParts, known_lines, with_known
    from core.memory.recall import Recalled

    rng = random.Random(seed)
    out = []
    for _ in range(count):
        kinds = rng.sample(CONTEXT_FACTS, 3)
        items = []
        for statement, _, _, values in kinds:
            value = rng.choice(values)
            ts = datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=rng.randrange(300))
            turn = rng.random() < 0.6  # recall shows what was said, or a memory made of it
            text = statement.format(value)
            items.append((Recalled(text=text, kind="turn" if turn else "fact", score=1.0, ts=ts), value))
        (_, question, answer, _), (_, value) = kinds[0], items[0]
        shown = [r for r, _ in items]
        rng.shuffle(shown)
        block = "\n".join(known_lines(PromptParts(persona="", message="", recalled=shown)))
        out.append(Pair(with_known(block, question), answer.format(value), "context"))
    return out
