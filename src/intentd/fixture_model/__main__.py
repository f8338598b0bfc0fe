from intentd.fixture_model.server import main

main()
