"""The text of the synthetic support desk: intents, slot values and style phrases.

Data only, no logic. Everything an answer can contain is listed here, so that
`classify.py` can recognise each part of a sampled answer from its text alone:

* each intent's procedure (`body`) carries `keywords` that no other part of any
  answer contains (a unit test checks this), so the intent an answer addresses
  is found by keyword;
* rude phrases, filler sentences (rambling) and closing offers each carry a
  marker that appears nowhere else.

Keep answers short: a concise answer is ~35 words, a rambling one ~55, so
generation on CPU stays fast.
"""
from __future__ import annotations

from dataclasses import dataclass

SLOT_NAMES = ("name", "order", "product", "date")


@dataclass(frozen=True)
class Intent:
    """One kind of customer request."""

    key: str
    slots: tuple[str, ...]
    """Slots (besides `name`, which every prompt has) that every prompt of this intent mentions."""
    asks: tuple[str, ...]
    """Ways a customer states the request; `{slot}` placeholders."""
    personal: tuple[str, ...]
    """The correct procedure, using the customer's details."""
    generic: tuple[str, ...]
    """The correct procedure without the customer's details."""
    keywords: tuple[str, ...]
    """Lower-case phrases that identify this procedure in an answer (any one suffices)."""


INTENTS: tuple[Intent, ...] = (
    Intent(
        "refund", ("order", "product"),
        (
            "I want a refund for the {product} from order {order}.",
            "Can I get my money back for the {product}? The order number is {order}.",
            "Please refund order {order}, the {product} is not what I expected.",
            "How do I return the {product} (order {order}) and get a refund?",
        ),
        (
            "I have started a refund for order {order}; the money will be back on your card within 5 working days.",
            "Your refund for the {product} from order {order} is approved and will reach your card in 5 working days.",
        ),
        (
            "I have started a refund for your order; the money will be back on your card within 5 working days.",
            "Your refund is approved and will reach your card in 5 working days.",
        ),
        ("refund",),
    ),
    Intent(
        "late_delivery", ("order", "date"),
        (
            "My order {order} from {date} still has not arrived.",
            "Where is my parcel? I ordered on {date}, order number {order}.",
            "Order {order} was supposed to be here days ago. I placed it on {date}.",
            "Why is order {order} so late? I bought it on {date}.",
        ),
        (
            "Order {order} is with the courier and should arrive within 2 days; the tracking link is in your email.",
            "The courier has order {order} and will deliver it within 2 days; the tracking link is in your email.",
        ),
        (
            "Your parcel is with the courier and should arrive within 2 days; the tracking link is in your email.",
            "The courier expects to deliver your parcel within 2 days; see the tracking link in your email.",
        ),
        ("courier", "tracking link"),
    ),
    Intent(
        "password_reset", (),
        (
            "I forgot my password and cannot log in.",
            "How do I reset my password?",
            "I am locked out of my account, the password does not work.",
            "My password stopped working, can you help me get back in?",
        ),
        (
            "I have sent a password reset link to the email on your account; it works for 30 minutes.",
            "A password reset link is on its way to your email and stays valid for 30 minutes.",
        ),
        (
            "I have sent a password reset link to the email on your account; it works for 30 minutes.",
            "A password reset link is on its way to your email and stays valid for 30 minutes.",
        ),
        ("password reset",),
    ),
    Intent(
        "cancel_subscription", (),
        (
            "I want to cancel my subscription.",
            "Please stop my monthly plan, I do not need it anymore.",
            "How can I end my membership?",
            "Cancel my subscription please, it is too expensive.",
        ),
        (
            "I have cancelled your subscription; you keep access until the end of this month.",
            "Your subscription is cancelled and stays active until the end of this month.",
        ),
        (
            "I have cancelled your subscription; you keep access until the end of this month.",
            "Your subscription is cancelled and stays active until the end of this month.",
        ),
        ("subscription",),
    ),
    Intent(
        "change_address", ("order",),
        (
            "I need to change the delivery address for order {order}.",
            "I moved last week. Can you send order {order} to my new address?",
            "Wrong address on order {order}, can I update it?",
            "Please update where order {order} should be delivered.",
        ),
        (
            "I have changed the shipping address of order {order}; the new address is confirmed in your email.",
            "The shipping address of order {order} is updated, and a confirmation is in your email.",
        ),
        (
            "I have changed the shipping address of your order; the new address is confirmed in your email.",
            "The shipping address of your order is updated, and a confirmation is in your email.",
        ),
        ("shipping address",),
    ),
    Intent(
        "opening_hours", (),
        (
            "What are your opening hours?",
            "When is your store open?",
            "Are you open on Sunday?",
            "What time do your shops close today?",
        ),
        (
            "Our stores are open Monday to Saturday from 9 am to 6 pm and closed on Sundays.",
            "We are open Monday to Saturday, 9 am to 6 pm; on Sundays the stores are closed.",
        ),
        (
            "Our stores are open Monday to Saturday from 9 am to 6 pm and closed on Sundays.",
            "We are open Monday to Saturday, 9 am to 6 pm; on Sundays the stores are closed.",
        ),
        ("monday to saturday",),
    ),
    Intent(
        "warranty", ("product", "date"),
        (
            "My {product} broke. I bought it on {date}, is it still under warranty?",
            "Does the warranty cover my {product}? I got it on {date}.",
            "The {product} I bought on {date} stopped working.",
            "Can you repair my {product}? It is from {date}.",
        ),
        (
            "Your {product} from {date} is covered by our 2-year warranty; send it in with the receipt for a free repair.",
            "The 2-year warranty covers your {product} bought on {date}; send it in with the receipt for a free repair.",
        ),
        (
            "Your item is covered by our 2-year warranty; send it in with the receipt for a free repair.",
            "The 2-year warranty covers your item; send it in with the receipt for a free repair.",
        ),
        ("warranty",),
    ),
    Intent(
        "failed_payment", ("order",),
        (
            "My payment for order {order} failed.",
            "Why was my card rejected for order {order}?",
            "I could not pay for order {order}, it keeps saying error.",
            "The checkout for order {order} did not go through.",
        ),
        (
            "The payment for order {order} was declined by your bank; please try again with another card.",
            "Your bank declined the payment for order {order}; please retry with a different card.",
        ),
        (
            "The payment was declined by your bank; please try again with another card.",
            "Your bank declined the payment; please retry with a different card.",
        ),
        ("declined",),
    ),
    Intent(
        "damaged_item", ("order", "product"),
        (
            "The {product} from order {order} arrived broken.",
            "My {product} came damaged, order {order}.",
            "Order {order}: the {product} was smashed when I opened the box.",
            "I received a damaged {product}. Order number {order}.",
        ),
        (
            "Sorry the {product} from order {order} arrived damaged; a free replacement is on its way.",
            "A free replacement for the damaged {product} from order {order} ships today.",
        ),
        (
            "Sorry your item arrived damaged; a free replacement is on its way.",
            "A free replacement for the damaged item ships today.",
        ),
        ("replacement",),
    ),
    Intent(
        "human_agent", (),
        (
            "I want to talk to a real person.",
            "Can I speak to a human, please?",
            "Get me a human agent.",
            "Is there a person I can talk to instead of a bot?",
        ),
        (
            "I have passed your chat to a human colleague, who will reply here within 10 minutes.",
            "A human colleague is taking over this chat and will answer within 10 minutes.",
        ),
        (
            "I have passed your chat to a human colleague, who will reply here within 10 minutes.",
            "A human colleague is taking over this chat and will answer within 10 minutes.",
        ),
        ("human colleague",),
    ),
    Intent(
        "stock_availability", ("product",),
        (
            "Do you have the {product} in stock?",
            "Is the {product} available right now?",
            "When will the {product} be back?",
            "Can I still buy the {product}?",
        ),
        (
            "The {product} is in stock in our online shop and ships within 24 hours.",
            "Good news: the {product} is in stock and leaves our warehouse within 24 hours.",
        ),
        (
            "That item is in stock in our online shop and ships within 24 hours.",
            "Good news: the item is in stock and leaves our warehouse within 24 hours.",
        ),
        ("in stock",),
    ),
    Intent(
        "discount_code", ("product",),
        (
            "Do you have a discount code for the {product}?",
            "Is there a coupon I can use on the {product}?",
            "Any promo code for the {product}?",
            "Can I get a discount on the {product}?",
        ),
        (
            "Use the code SAVE10 at checkout to get 10% off the {product} until the end of the month.",
            "Enter SAVE10 at checkout for 10% off the {product}; it is valid until the end of the month.",
        ),
        (
            "Use the code SAVE10 at checkout to get 10% off until the end of the month.",
            "Enter SAVE10 at checkout for 10% off; it is valid until the end of the month.",
        ),
        ("save10",),
    ),
)

INTENT_KEYS: tuple[str, ...] = tuple(i.key for i in INTENTS)
BY_KEY: dict[str, Intent] = {i.key: i for i in INTENTS}

# How a customer mentions their name; every prompt has one.
INTRODUCTIONS: tuple[str, ...] = (
    "Hi, this is {name}. {ask}",
    "Hello, {name} here. {ask}",
    "{ask} Thanks, {name}",
    "Hi, I am {name}. {ask}",
    "{ask} - {name}",
    "Good morning, my name is {name}. {ask}",
)

NAMES: tuple[str, ...] = (
    "Anna", "Ben", "Carla", "David", "Elena", "Farid", "Grace", "Hugo", "Ines", "Jonas",
    "Kira", "Leo", "Maya", "Nils", "Olga", "Pedro", "Rosa", "Sam", "Tara", "Umar",
    "Vera", "Walter", "Yara", "Zoe", "Omar", "Lena", "Marco", "Nina", "Paul", "Sofia",
)
PRODUCTS: tuple[str, ...] = (
    "blue kettle", "desk lamp", "rain jacket", "coffee grinder", "wool scarf", "phone case",
    "yoga mat", "toaster", "backpack", "table fan", "wireless mouse", "cookbook",
    "garden hose", "alarm clock", "water bottle", "reading chair", "hair dryer", "headphones",
)
MONTHS: tuple[str, ...] = (
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
)

# --- style phrases -------------------------------------------------------
POLITE_GREETINGS_PERSONAL = (
    "Hi {name}, thanks for reaching out.",
    "Hello {name}, thank you for contacting us.",
    "Dear {name}, thanks for your message.",
)
POLITE_GREETINGS_GENERIC = (
    "Hi there, thanks for reaching out.",
    "Hello, thank you for contacting us.",
    "Thanks for your message.",
)
RUDE_GREETINGS_PERSONAL = ("Look, {name}.", "Ugh, {name}, fine.", "Listen, {name}.")
RUDE_GREETINGS_GENERIC = ("Look.", "Ugh, fine.", "Listen.")
RUDE_TAILS = (
    "Read the FAQ next time.",
    "Try not to bother us with this again.",
    "This is really not hard.",
)
FILLERS = (
    "Our family company has proudly served customers since 1998.",
    "Our team works very hard every single day for you.",
    "By the way, our weekly newsletter is full of useful tips.",
    "Honestly, this question comes up a lot these days.",
)
POLITE_CLOSINGS = (
    "Is there anything else I can help you with?",
    "Let me know if there is anything else I can do.",
    "Happy to help with anything else.",
)
RUDE_CLOSINGS = ("Anything else, or are we done?", "Need anything else? Be quick.")
REFUSALS = (
    "I am sorry, but I cannot help with that request.",
    "Sorry, that is not something I can deal with here.",
)

# Markers: lower-case regular expressions, each found only in its own kind of phrase.
RUDE_MARKERS = (r"\bugh\b", r"\blook[,.]", r"\blisten[,.]", r"\bfaq\b", r"bother us", r"not hard")
FILLER_MARKERS = (r"since 1998", r"works very hard", r"newsletter", r"comes up a lot")
CLOSING_MARKERS = (r"anything else",)
REFUSAL_MARKERS = (r"cannot help with that", r"not something i can deal with")
