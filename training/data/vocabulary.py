"""The synthetic world's language: departments, categories, product concepts and their synonyms.

Real English words on purpose: the MiniLM vectors of generated titles and queries then mean
something, and synonyms ("sofa" / "couch") make relevance visible to the encoder but not to exact
term matching, so the text vectors carry information the lexical features lack.

Each concept line is ``"form|synonym|..."``; the first form names the concept.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Concept:
    """A product notion and the surface forms a title or a query may use for it."""

    forms: tuple[str, ...]


@dataclass(frozen=True)
class Category:
    name: str
    department: str
    concepts: tuple[Concept, ...]


_CATALOGUE: dict[str, dict[str, str]] = {
    "home": {
        "furniture": "sofa|couch|settee, armchair|lounge chair, recliner, ottoman|footstool, "
        "bookshelf|bookcase, coffee table, dining chair, bench, wardrobe|closet, "
        "desk|writing table",
        "bedding": "duvet|comforter, pillow|cushion, bed sheet|fitted sheet, blanket|throw, "
        "mattress topper|mattress pad, pillowcase, quilt|bedspread, bed skirt, weighted blanket, "
        "sleeping mask",
        "lighting": "lamp|light, floor lamp|standing lamp, ceiling light|pendant, chandelier, "
        "bulb|light bulb, string lights|fairy lights, desk lamp|reading lamp, sconce|wall light, "
        "night light, lantern",
        "rugs": "rug|carpet, runner|hallway rug, doormat|door mat, bath mat, area rug, shag rug, "
        "rug pad, kilim, outdoor rug, round rug",
        "storage": "basket|bin, storage box|container, shelf|shelving unit, hanger|coat hanger, "
        "drawer organizer, shoe rack, laundry hamper|laundry basket, hook|wall hook, "
        "vacuum bag|space saver bag, trunk|chest",
    },
    "kitchen": {
        "cookware": "frying pan|skillet, saucepan|pot, stock pot, wok, dutch oven|casserole, "
        "baking sheet|sheet pan, roasting pan, griddle, steamer, pressure cooker",
        "appliances": "blender|smoothie maker, toaster, kettle|electric kettle, microwave, "
        "air fryer, mixer|stand mixer, food processor|chopper, rice cooker, juicer, "
        "slow cooker|crock pot",
        "tableware": "plate|dish, bowl, mug|cup, wine glass, cutlery|flatware, tumbler|drinking "
        "glass, serving tray|platter, napkin, teapot, placemat|table mat",
        "coffee": "coffee maker|coffee machine, espresso machine, french press|cafetiere, "
        "coffee grinder|burr grinder, coffee beans, milk frother, tea|loose tea, tea infuser, "
        "coffee filter, pour over|drip cone",
    },
    "electronics": {
        "phones": "smartphone|mobile phone, phone case|phone cover, screen protector, charger|"
        "charging cable, power bank|portable battery, phone holder|phone mount, wireless charger, "
        "sim card, selfie stick, earbuds|earphones",
        "computers": "laptop|notebook, keyboard, mouse|computer mouse, monitor|display, webcam, "
        "laptop bag|laptop sleeve, usb hub|docking station, external drive|hard drive, "
        "graphics card, router|wifi router",
        "audio": "headphones|headset, speaker|loudspeaker, soundbar, turntable|record player, "
        "microphone|mic, amplifier, bluetooth speaker, radio, subwoofer, audio cable",
        "cameras": "camera|digital camera, lens|camera lens, tripod, action camera, memory card|"
        "sd card, camera bag, drone|quadcopter, flash|speedlight, film camera, gimbal|stabilizer",
        "television": "television|tv, projector, remote control|remote, tv mount|wall bracket, "
        "streaming stick|streaming device, antenna, hdmi cable, media player, projector screen, "
        "game console",
    },
    "fashion": {
        "shoes": "sneakers|trainers, boots, sandals, loafers, heels|high heels, slippers, "
        "running shoes, hiking boots, flip flops, ankle boots",
        "womenswear": "dress|gown, skirt, blouse|top, leggings, cardigan|sweater, jumpsuit, "
        "coat|overcoat, jeans|denim, pajamas|nightwear, swimsuit|bathing suit",
        "menswear": "shirt|button down, t shirt|tee, trousers|pants, suit, jacket|blazer, "
        "hoodie|sweatshirt, shorts, polo shirt, tie|necktie, vest|waistcoat",
        "bags": "backpack|rucksack, handbag|purse, tote bag|tote, wallet, suitcase|luggage, "
        "duffel bag|holdall, crossbody bag, clutch, briefcase, belt bag|fanny pack",
        "jewelry": "necklace|pendant necklace, ring, earrings, bracelet|bangle, watch|wristwatch, "
        "brooch, anklet, cufflinks, charm, jewelry box",
    },
    "sports": {
        "cycling": "bicycle|bike, bike helmet|cycling helmet, bike light, bike lock, "
        "cycling jersey, pedals, saddle|bike seat, bike pump|tire pump, inner tube, "
        "bike computer",
        "fitness": "dumbbell|hand weight, yoga mat|exercise mat, kettlebell, resistance band, "
        "treadmill, exercise bike|spin bike, jump rope|skipping rope, foam roller, "
        "pull up bar, weight bench",
        "camping": "tent, sleeping bag, camping stove|camp stove, headlamp|head torch, "
        "cooler|cool box, camping chair, hammock, water filter, trekking poles|hiking poles, "
        "compass",
        "running": "running vest, running watch|gps watch, hydration pack|water bladder, "
        "running socks, compression socks, arm band|phone armband, reflective vest, "
        "running belt, energy gel, sweatband|headband",
    },
    "beauty": {
        "skincare": "moisturizer|face cream, cleanser|face wash, serum, sunscreen|sunblock, "
        "toner, face mask|sheet mask, eye cream, exfoliator|scrub, lip balm, body lotion",
        "haircare": "shampoo, conditioner, hair dryer|blow dryer, hair straightener|flat iron, "
        "curling iron|curling wand, hair brush|comb, hair oil, hair mask, hair clip|barrette, "
        "dry shampoo",
        "makeup": "lipstick, mascara, foundation, eyeshadow|eye shadow, blush|rouge, eyeliner, "
        "concealer, makeup brush, nail polish|nail varnish, setting powder|face powder",
    },
    "tools": {
        "power tools": "drill|power drill, circular saw, jigsaw, sander|orbital sander, "
        "angle grinder, impact driver, heat gun, rotary tool, nail gun, tile cutter",
        "gardening": "lawn mower|mower, garden hose|hose pipe, pruning shears|secateurs, "
        "shovel|spade, rake, watering can, wheelbarrow, hedge trimmer, planter|flower pot, "
        "gardening gloves",
    },
    "kids": {
        "toys": "building blocks|bricks, puzzle|jigsaw puzzle, doll, toy car|model car, "
        "board game, plush toy|stuffed animal, kite, action figure, toy train, play tent",
        "baby": "stroller|pushchair, car seat, crib|cot, high chair, baby monitor, diaper|nappy, "
        "baby bottle|feeding bottle, pacifier|dummy, baby carrier|sling, changing mat",
    },
}

#: Attributes any product may carry; queries name them as modifiers ("red", "wooden").
ATTRIBUTES: tuple[str, ...] = (
    "red",
    "blue",
    "black",
    "white",
    "green",
    "grey",
    "pink",
    "yellow",
    "brown",
    "beige",
    "wooden",
    "leather",
    "cotton",
    "steel",
    "plastic",
    "glass",
    "wool",
    "bamboo",
    "silk",
    "velvet",
    "small",
    "large",
    "compact",
    "portable",
    "waterproof",
    "vintage",
    "modern",
    "premium",
    "lightweight",
    "foldable",
)

#: Invented brand names, a dozen per department: lexical signals MiniLM knows nothing about.
_BRAND_SYLLABLES: tuple[str, ...] = (
    "vel",
    "tor",
    "mar",
    "kin",
    "sol",
    "dra",
    "lum",
    "zen",
    "pax",
    "ori",
    "bel",
    "quin",
)


def _parse_concepts(line: str) -> tuple[Concept, ...]:
    return tuple(
        Concept(tuple(form.strip() for form in entry.split("|")))
        for entry in line.split(",")
        if entry.strip()
    )


CATEGORIES: tuple[Category, ...] = tuple(
    Category(name, department, _parse_concepts(line))
    for department, categories in _CATALOGUE.items()
    for name, line in categories.items()
)
DEPARTMENTS: tuple[str, ...] = tuple(_CATALOGUE)


def department_brands(department_index: int, per_department: int = 12) -> tuple[str, ...]:
    """Deterministic made-up brand names for one department, e.g. 'Veltor', 'Markin'."""
    syllables = _BRAND_SYLLABLES
    n = len(syllables)
    return tuple(
        (
            syllables[(department_index + i) % n]
            + syllables[(3 * department_index + 5 * i + 1) % n]
        ).capitalize()
        for i in range(per_department)
    )
