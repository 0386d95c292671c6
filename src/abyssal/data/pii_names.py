"""A gazetteer of common first names across cultures, for :mod:`abyssal.data.pii`.

A capitalized word found here, followed by a capitalized word, is taken for a first and last name
("Maria Garcia"). The list is a few hundred common given names (English, Spanish, Portuguese,
French, German, Nordic, Italian, Arabic, Indian, Chinese and Japanese romanized, Korean, Russian,
Polish, Turkish, Vietnamese, African); names that are also common English words or places (Will,
Mark, May, April, Grace, Virginia, Austin) are left out on purpose, since a sentence such as "May
Sales rose" must not be masked. Any name not listed here is missed unless an honorific (Mr, Dr
...) precedes it.
"""

from __future__ import annotations

# fmt: off
FIRST_NAMES: tuple[str, ...] = (
    # English (men)
    "James", "John", "Robert", "Michael", "William", "David", "Richard", "Joseph", "Thomas",
    "Charles", "Christopher", "Daniel", "Matthew", "Anthony", "Donald", "Steven", "Paul",
    "Andrew", "Joshua", "Kenneth", "Kevin", "Brian", "George", "Timothy", "Ronald", "Edward",
    "Jason", "Jeffrey", "Ryan", "Jacob", "Gary", "Nicholas", "Eric", "Jonathan", "Stephen",
    "Larry", "Justin", "Scott", "Brandon", "Benjamin", "Samuel", "Gregory", "Alexander",
    "Patrick", "Jack", "Dennis", "Jerry", "Tyler", "Aaron", "Henry", "Adam", "Douglas",
    "Nathan", "Peter", "Zachary", "Kyle", "Walter", "Harold", "Jeremy", "Ethan", "Carl",
    "Keith", "Roger", "Gerald", "Christian", "Terry", "Sean", "Arthur", "Noah", "Lawrence",
    "Jesse", "Joe", "Bryan", "Billy", "Jordan", "Albert", "Dylan", "Bruce", "Gabriel", "Alan",
    "Juan", "Logan", "Wayne", "Ralph", "Roy", "Eugene", "Randy", "Vincent", "Russell", "Louis",
    "Philip", "Bobby", "Johnny", "Bradley", "Oliver", "Harry", "Jake", "Charlie", "Liam",
    "Lucas", "Mason", "Owen", "Luke", "Isaac", "Leo", "Oscar", "Freddie", "Alfie", "Archie",
    "Theo", "Hugo",
    # English (women)
    "Mary", "Patricia", "Jennifer", "Linda", "Elizabeth", "Barbara", "Susan", "Jessica",
    "Sarah", "Karen", "Lisa", "Nancy", "Betty", "Margaret", "Sandra", "Ashley", "Kimberly",
    "Emily", "Donna", "Michelle", "Carol", "Amanda", "Dorothy", "Melissa", "Deborah",
    "Stephanie", "Rebecca", "Sharon", "Laura", "Cynthia", "Kathleen", "Amy", "Angela",
    "Shirley", "Anna", "Brenda", "Pamela", "Emma", "Nicole", "Helen", "Samantha", "Katherine",
    "Christine", "Debra", "Rachel", "Carolyn", "Janet", "Catherine", "Maria", "Heather",
    "Diane", "Ruth", "Julie", "Olivia", "Joyce", "Victoria", "Kelly", "Lauren", "Christina",
    "Joan", "Evelyn", "Judith", "Megan", "Andrea", "Cheryl", "Hannah", "Jacqueline", "Martha",
    "Gloria", "Teresa", "Sara", "Madison", "Frances", "Kathryn", "Janice", "Jean", "Abigail",
    "Alice", "Judy", "Sophia", "Julia", "Marie", "Denise", "Beverly", "Danielle", "Isabella",
    "Charlotte", "Amelia", "Mia", "Harper", "Ava", "Chloe", "Lily", "Sophie", "Ella", "Poppy",
    "Isla", "Freya", "Ellie", "Ruby", "Lucy", "Zoe", "Chloé",
    # Spanish and Portuguese
    "Jose", "Luis", "Carlos", "Jorge", "Miguel", "Pedro", "Alejandro", "Javier", "Diego",
    "Fernando", "Manuel", "Antonio", "Francisco", "Rafael", "Sergio", "Pablo", "Andres",
    "Ricardo", "Eduardo", "Raul", "Alberto", "Roberto", "Enrique", "Mateo", "Sebastian",
    "Valentina", "Camila", "Lucia", "Sofia", "Isabel", "Carmen", "Dolores", "Pilar", "Rosa",
    "Elena", "Paula", "Marta", "Alba", "Ximena", "Guadalupe", "Fernanda", "Gabriela",
    "Daniela", "Mariana", "Alejandra", "Juana", "Beatriz", "Ines", "Rocio", "Joao", "Ana",
    "Tiago", "Rodrigo", "Goncalo", "Leonor",
    # French
    "Pierre", "Jacques", "Michel", "Philippe", "Alain", "Nicolas", "Francois", "François",
    "Olivier", "Laurent", "Christophe", "Thierry", "Guillaume", "Antoine", "Julien", "Mathieu",
    "Sebastien", "Baptiste", "Emile", "Nathalie", "Isabelle", "Sylvie", "Sandrine", "Valerie",
    "Celine", "Camille", "Manon", "Amandine", "Aurelie", "Juliette", "Margaux", "Elodie",
    # German and Nordic
    "Hans", "Klaus", "Jurgen", "Jürgen", "Wolfgang", "Dieter", "Uwe", "Helmut", "Gunter",
    "Stefan", "Andreas", "Markus", "Matthias", "Tobias", "Florian", "Lukas", "Jonas", "Felix",
    "Maximilian", "Niklas", "Moritz", "Ursula", "Monika", "Petra", "Sabine", "Susanne",
    "Birgit", "Claudia", "Heike", "Katrin", "Anja", "Lena", "Leonie", "Greta", "Johanna",
    "Ingrid", "Helga", "Gisela", "Annika", "Jannik", "Sven", "Lars", "Erik", "Anders",
    "Magnus", "Nils", "Björn", "Astrid", "Sigrid", "Freja", "Karin", "Kirsten",
    # Italian
    "Giuseppe", "Giovanni", "Francesco", "Marco", "Luca", "Alessandro", "Matteo", "Lorenzo",
    "Davide", "Riccardo", "Stefano", "Paolo", "Giorgio", "Fabio", "Simone", "Federico",
    "Leonardo", "Giulia", "Chiara", "Francesca", "Federica", "Alessia", "Martina", "Silvia",
    "Elisa", "Giorgia", "Roberta", "Paola", "Antonella", "Rosaria",
    # Arabic
    "Mohammed", "Muhammad", "Mohamed", "Ahmed", "Ahmad", "Ali", "Omar", "Hassan", "Hussein",
    "Ibrahim", "Mahmoud", "Mustafa", "Khalid", "Yusuf", "Youssef", "Abdullah", "Hamza",
    "Bilal", "Tariq", "Karim", "Samir", "Rami", "Nabil", "Walid", "Faisal", "Saeed", "Fatima",
    "Aisha", "Ayesha", "Khadija", "Mariam", "Maryam", "Zainab", "Layla", "Leila", "Nour",
    "Noor", "Amira", "Yasmin", "Yasmine", "Salma", "Huda", "Rania", "Samira", "Leyla",
    # Indian
    "Rahul", "Amit", "Sanjay", "Vijay", "Rajesh", "Suresh", "Ramesh", "Anil", "Sunil", "Ravi",
    "Arjun", "Rohan", "Vikram", "Aditya", "Karan", "Deepak", "Manoj", "Pradeep", "Ajay",
    "Nikhil", "Abhishek", "Siddharth", "Anand", "Arun", "Priya", "Pooja", "Neha", "Anjali",
    "Kavita", "Sunita", "Anita", "Deepika", "Divya", "Shreya", "Lakshmi", "Aishwarya", "Meera",
    "Ananya", "Sneha", "Swati", "Nisha", "Rekha", "Geeta", "Shalini", "Harpreet", "Gurpreet",
    "Manpreet",
    # Chinese (pinyin)
    "Wei", "Jing", "Ming", "Hui", "Xin", "Yan", "Lei", "Hao", "Fang", "Yong", "Qiang",
    "Xiaoming", "Xiaohong", "Jianguo", "Zhiwei", "Haoran", "Yuxuan", "Zihan", "Yichen",
    "Xinyi", "Jiayi", "Meiling", "Lihua", "Mei", "Ling",
    # Japanese
    "Hiroshi", "Takashi", "Kenji", "Akira", "Haruto", "Yuto", "Sota", "Daiki", "Kenta",
    "Satoshi", "Yuki", "Sakura", "Yui", "Aoi", "Hina", "Haruka", "Yuko", "Keiko", "Naoko",
    "Tomoko", "Akiko",
    # Korean (romanized, unhyphenated)
    "Minjun", "Seojun", "Jiho", "Jiwoo", "Seoyeon", "Jisoo", "Minseo", "Hyun", "Jimin",
    "Soyeon", "Eunji", "Yuna",
    # Russian and Polish
    "Ivan", "Dmitri", "Dmitry", "Sergei", "Sergey", "Alexei", "Andrei", "Mikhail", "Nikolai",
    "Vladimir", "Pavel", "Yuri", "Boris", "Olga", "Natalia", "Natasha", "Anastasia", "Tatiana",
    "Svetlana", "Irina", "Ekaterina", "Yulia", "Oksana", "Galina", "Marina", "Piotr", "Pawel",
    "Krzysztof", "Tomasz", "Katarzyna", "Agnieszka", "Malgorzata", "Zofia", "Jakub",
    "Wojciech",
    # Turkish
    "Mehmet", "Ahmet", "Emre", "Burak", "Murat", "Ayse", "Fatma", "Zeynep", "Elif", "Emine",
    "Merve",
    # Vietnamese
    "Minh", "Linh", "Thanh", "Tuan", "Huong", "Duc",
    # African (Akan, Igbo, Yoruba, Amharic, Nguni, Swahili, Wolof)
    "Kwame", "Kofi", "Kwabena", "Ama", "Akosua", "Chidi", "Chinedu", "Emeka", "Oluwaseun",
    "Olumide", "Tunde", "Ngozi", "Adaeze", "Chiamaka", "Amara", "Abebe", "Tesfaye", "Thabo",
    "Sipho", "Thandiwe", "Nomvula", "Zanele", "Themba", "Wanjiru", "Njeri", "Otieno", "Baraka",
    "Amani", "Fatou", "Moussa", "Mamadou", "Aminata",
    # Indian (newer)
    "Aarav", "Vivaan", "Sai", "Ishaan", "Reyansh", "Diya", "Saanvi", "Aadhya", "Kiara", "Myra",
    # Brazilian
    "Thiago", "Gustavo", "Leandro", "Vinicius", "Rafaela", "Larissa", "Leticia", "Bruna",
    "Juliana",
)
# fmt: on
"""Given names, title case as written in text; accented forms are listed beside plain ones."""
