"""Voice notes and photos, read offline: audio becomes a transcript, an image becomes the text in it.

The core knows no platform: a channel downloads the bytes (held in memory only) and hands them
to `MediaReader`, which turns them into the text of an ordinary message.
"""
