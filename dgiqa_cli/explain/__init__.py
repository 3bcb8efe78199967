"""Why a picture scored as it did: depth, attention and local-quality maps, drawn as panels."""
