"""localstripe for the bench: the project's loopback launcher with its state kept in memory.

localstripe pickles its whole state to the fixed path /tmp/localstripe.pickle after every write,
which makes each call slower as the state grows (a bench artefact, not Stripe's latency) and
would overwrite the file of any other localstripe on the machine. The bench turns that off.
"""

from localstripe.resources import Store

Store.dump_to_disk = lambda self: None

if __name__ == "__main__":
    from scripts.localstripe_server import main

    main()
