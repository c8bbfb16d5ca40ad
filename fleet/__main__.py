from fleet.entry import main

main()
