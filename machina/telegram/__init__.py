"""``machina-telegram``: the Telegram front end (chat, commands, approvals), on python-telegram-bot 22.

Fail closed: without TELEGRAM_CHAT_ID it refuses to start, and one gate (:mod:`machina.telegram.gate`) in
front of every update type drops anything from another chat or user before a handler runs.
"""
