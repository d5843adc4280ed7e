"""A stand-in for ``transformers.AutoTokenizer`` in the vendored ``conversation.py`` (not LLaVA-NeXT's code).

LLaVA-NeXT's ``conversation.py`` builds its ``llava_llama_3`` template with
``AutoTokenizer.from_pretrained("meta-llama/Meta-Llama-3-8B-Instruct")`` when it is imported. That tokenizer
is the template's own, read only by ``Conversation.get_prompt`` to render an inference prompt; the training
data path (``preprocess_llama3``) uses the tokenizer it is given. Tests have no Hub, so the template gets
None: the import needs no network, and any use of that tokenizer would fail loudly instead of quietly.
"""


class AutoTokenizer:
    @staticmethod
    def from_pretrained(*args, **kwargs):
        return None
