"""The rollout grammar: `<SLATE> l1 l2 ... </SLATE> <RANK> la lb ... </RANK>`.

(Stub: constants only; render/parse land with the rewards issue.)
"""

SLATE_OPEN = "<SLATE>"
SLATE_CLOSE = "</SLATE>"
RANK_OPEN = "<RANK>"
RANK_CLOSE = "</RANK>"
FORMAT_TOKENS = (SLATE_OPEN, SLATE_CLOSE, RANK_OPEN, RANK_CLOSE)
