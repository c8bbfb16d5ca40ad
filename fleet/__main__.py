from fleet.main import main

main()
