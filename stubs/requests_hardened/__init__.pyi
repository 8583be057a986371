# requests-hardened is annotated but ships no py.typed marker; these stubs state the parts PixShift
# uses, copied from its signatures (1.3).
from requests_hardened.client import HTTPSession as HTTPSession
from requests_hardened.config import Config as Config
